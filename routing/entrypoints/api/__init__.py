"""The admin/ops HTTP API (FastAPI): the FAQ operations behind per-user bearer tokens."""

from routing.entrypoints.api.app import create_app

__all__ = ["create_app"]
