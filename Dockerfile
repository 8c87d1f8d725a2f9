# syntax=docker/dockerfile:1
# portal-service image: dependencies from uv.lock in a builder stage, then a slim runtime
# that holds only the virtual environment and runs as an unprivileged user.
#
#   docker build -t portal-service .
#   docker run --env-file .env -p 8000:8000 portal-service               # serve
#   docker run --env-file .env portal-service portal-service migrate     # one-shot migration
#
# The image defaults to ENVIRONMENT=production, so it refuses to start (one line, non-zero
# exit) until it is given PostgreSQL, a Stripe key, webhook secrets and some authentication.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install "uv==0.13.9"
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
# Then the project itself, as a regular (non-editable) install: the wheel carries the
# Alembic migrations (see pyproject.toml), so the runtime stage needs no source tree.
COPY src ./src
COPY alembic ./alembic
RUN uv sync --locked --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin portal \
    && mkdir /app && chown portal:portal /app
# Same path as in the builder: the venv's scripts point at /opt/venv/bin/python.
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production
WORKDIR /app
USER portal
EXPOSE 8000
# /healthz answers while the process lives; orchestrators should gate traffic on /readyz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
# serve never migrates: run `portal-service migrate` first (the compose file's migrate service).
CMD ["portal-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
