# syntax=docker/dockerfile:1
# stateless-backend container image.
#   builder: a venv with the locked runtime dependencies (requirements-runtime.lock) and the
#            package itself (--no-deps, so nothing unlocked sneaks in); pip is removed after.
#   runtime: the same slim base, only that venv, a non-root user, no compilers, no caches.
# Default start: `stateless serve` with MIGRATE_ON_START=true, so `docker run -p 8000:8000
# stateless-backend` comes up on the embedded SQLite database in /app/var. Deployments with a
# release step (Render's preDeployCommand) set MIGRATE_ON_START=false and run `stateless migrate`.
# tests/ops/test_dockerfile_replay.py replays the RUN/COPY/CMD lines below in a clean venv.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /build
RUN python -m venv /opt/venv
COPY requirements-runtime.lock ./
RUN python -m pip install --no-cache-dir --only-binary=:all: -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip install --no-cache-dir --no-deps . \
    && python -m pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="stateless-backend" \
      org.opencontainers.image.description="Privacy-first, multi-tenant backend for iOS and web apps" \
      org.opencontainers.image.licenses="MIT"
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WEB_CONCURRENCY=1 \
    LOG_FORMAT=json \
    MIGRATE_ON_START=true
RUN groupadd --system --gid 10001 stateless \
    && useradd --system --uid 10001 --gid stateless --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin stateless \
    && mkdir -p /app/var \
    && chown stateless:stateless /app/var
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["stateless", "serve"]
