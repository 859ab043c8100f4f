"""``/docs`` (Swagger UI) and ``/redoc`` served with their assets from the application.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and a favicon, and ReDoc's
Google Fonts), so on a bank's network without Internet access, or on a laptop offline,
``/docs`` was a blank page. The assets are vendored under ``routing/entrypoints/api/static``
(swagger-ui-dist 5 and redoc 2 from npm, with their licences; ``static/README.md`` says
which versions and how to update them) and served under :data:`ASSETS`; the pages are
FastAPI's, pointed at them, with Swagger UI's online validator badge turned off (it would
send the schema's URL to validator.swagger.io). No page needs a token, like the schema.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = "/docs/assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def add_docs(app: FastAPI, *, title: str) -> None:
    """Serve ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and their assets on ``app``
    (built with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=STATIC_DIR), name="api-docs-assets")

    def root(request: Request) -> str:
        path: str = request.scope.get("root_path", "")
        return path.rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=f"{base}/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{base}{ASSETS}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{ASSETS}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{base}{ASSETS}/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=f"{base}{OAUTH2_REDIRECT}",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return get_redoc_html(
            openapi_url=f"{base}/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{base}{ASSETS}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{base}{ASSETS}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
