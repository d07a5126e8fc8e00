# syntax=docker/dockerfile:1.7
# Gateway image: `python -m gateway serve` (REST :8080, gRPC :50051) and the batch scorer
# (`python -m gateway batch-score ...`). Runtime dependencies only: the [triton] and [train]
# extras are not installed; Triton runs from the stock NGC image (see docs/operations.md).
#
# Build:  docker build -t ghcr.io/triton-inference-gateway/gateway:0.1.0 .
# For reproducible production builds pin the base images by digest as well
# (python:3.11.14-slim-bookworm@sha256:...), e.g. with Renovate/Dependabot.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: a self-contained virtualenv with the package and its pinned dependencies ---
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (exact pins in pyproject.toml) so code edits keep this layer cached.
COPY pyproject.toml README.md* ./
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
RUN pip install -r /tmp/requirements.txt
COPY gateway/ gateway/
COPY triton/ triton/
COPY training/ training/
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv \
 && python -c "import gateway"

# --- runtime: no compilers, no pip cache, non-root, read-only root filesystem friendly ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="triton-inference-gateway" \
      org.opencontainers.image.description="Online inference gateway for NVIDIA Triton" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/triton-inference-gateway/triton-inference-gateway"
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
# Bytecode is precompiled in the builder; nothing is written outside /tmp at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    GATEWAY_SPEC_PATH=/etc/gateway/models.yaml \
    GATEWAY_HTTP_PORT=8080 \
    GATEWAY_GRPC_PORT=50051
COPY --chown=root:root --chmod=0444 config/models.yaml /etc/gateway/models.yaml
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 50051
# Kubernetes uses the chart's probes; this is for plain `docker run` / compose.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_HTTP_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["python", "-m", "gateway"]
CMD ["serve"]
