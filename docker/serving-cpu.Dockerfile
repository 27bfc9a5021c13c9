# syntax=docker/dockerfile:1.7
# The serving and builder image without GPUs: Ray Serve replicas and engine builds on CPU with
# ONNX Runtime (int8). torch is the CPU build of the lock's version; no CUDA libraries at all.
# Build from the repository root:
#   docker build -f docker/serving-cpu.Dockerfile -t ghcr.io/recserve/recserve-serving:0.1.0 .
ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1
RUN python -m venv /opt/recserve
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
# The lock's pins minus torch's CUDA stack; torch itself comes from PyTorch's CPU index at the
# lock's version (its other dependencies are in the lock).
RUN grep -vE '^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' requirements.lock > /tmp/cpu.lock \
    && uv pip install --python /opt/recserve/bin/python -r /tmp/cpu.lock \
    && uv pip install --python /opt/recserve/bin/python --no-deps \
       --index-url https://download.pytorch.org/whl/cpu \
       "torch==$(sed -n 's/^torch==//p' requirements.lock)"
COPY operator/ operator/
COPY serving/ serving/
COPY data/movielens-small/ /opt/recserve-data/movielens-small/
RUN uv pip install --python /opt/recserve/bin/python --no-deps . \
    && /opt/recserve/bin/python -c "import torch, onnxruntime; assert not torch.cuda.is_available()"

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="recserve-serving-cpu" \
      org.opencontainers.image.description="recserve Ray Serve runtime and engine builder for CPU (ONNX Runtime)" \
      org.opencontainers.image.source="https://recserve.dev/source" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home --shell /bin/bash ray
COPY --from=build /opt/recserve /opt/recserve
COPY --from=build /opt/recserve-data /opt/recserve-data
ENV PATH=/opt/recserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RECSERVE_DATA=/opt/recserve-data/movielens-small
# On a KubeRay head: Ray's GCS, Serve's HTTP proxy and the dashboard (with the Serve REST API).
EXPOSE 6379 8000 8265
USER 1000:1000
WORKDIR /home/ray
ENTRYPOINT ["recserve"]
CMD ["--help"]
