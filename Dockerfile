# syntax=docker/dockerfile:1
# The statement-router image: one image, one role per container (docker-compose.yml picks
# the command). Runtime dependencies only (`pip install .`, never `.[dev]`), non-root.
#
# Two stages so that nothing used to build the wheels (pip's caches, the sources) stays
# in the image; every dependency ships manylinux wheels for python:3.11-slim, so no
# compiler is needed.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# pyproject.toml names README.md as the readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY routing ./routing
COPY events ./events
COPY adapters ./adapters
COPY config ./config
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed uid/gid, so that volume permissions are the same on every host.
RUN groupadd --system --gid 10001 statement-router \
    && useradd --system --uid 10001 --gid statement-router --no-create-home \
       --home-dir /var/lib/statement-router --shell /usr/sbin/nologin statement-router \
    && mkdir -p /var/lib/statement-router \
    && chown statement-router:statement-router /var/lib/statement-router
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels statement-router
# DATA_DIR: the router's RocksDB Tables (docker-compose.yml mounts a volume here, one per
# container). Owned by the runtime user, so a fresh volume is writable.
WORKDIR /var/lib/statement-router
USER statement-router
# 8080: the HTTP API (and its /metrics); 9100: the other roles' /metrics and /healthz.
EXPOSE 8080 9100
CMD ["statement-router", "--help"]
