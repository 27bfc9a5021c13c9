# syntax=docker/dockerfile:1.7
# The recserve operator: kopf + the Kubernetes client + the pure planners. No torch, Ray or ONNX
# Runtime: it renders manifests and talks to the API server, and builds run in Jobs.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/recserve/recserve-operator:0.1.0 .
ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1
# uv installs everything; the venv needs no pip of its own.
RUN python -m venv --without-pip /opt/recserve
WORKDIR /src
COPY requirements.lock ./
COPY docker/operator-requirements.in docker/
RUN uv pip install --python /opt/recserve/bin/python -c requirements.lock -r docker/operator-requirements.in
# The package last, so that a code or README change rebuilds from here on, not the install above.
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY serving/ serving/
# --no-deps: the package's full dependency list (torch, Ray) is the serving image's business.
RUN uv pip install --python /opt/recserve/bin/python --no-deps . \
    && /opt/recserve/bin/python -c "import recserve_operator.cli, recserve_operator.planners" \
    && ! /opt/recserve/bin/python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="recserve-operator" \
      org.opencontainers.image.description="The recserve Kubernetes operator (kopf): RecommenderModel to engine builds and KubeRay rollouts" \
      org.opencontainers.image.source="https://recserve.dev/source" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /opt/recserve /opt/recserve
ENV PATH=/opt/recserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# The chart's securityContext runs it as this uid with a read-only root filesystem.
USER 65532:65532
EXPOSE 8080 8081 9443
ENTRYPOINT ["recserve", "operator"]
