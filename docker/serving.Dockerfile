# syntax=docker/dockerfile:1.7
# The serving and builder image on NVIDIA GPUs: Ray Serve replicas (KubeRay head and worker
# pods) and engine build Jobs (`recserve build`). torch 2.15, onnxruntime-gpu and TensorRT, all
# on CUDA 13; the Python packages are requirements.lock's pins plus serving-gpu-requirements.txt.
# Build from the repository root:
#   docker build -f docker/serving.Dockerfile -t ghcr.io/recserve/recserve-serving:0.1.0-cuda .
ARG CUDA_IMAGE=docker.io/nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 UV_PYTHON_INSTALL_DIR=/opt/python
# The project is locked for CPython 3.11; Ubuntu 24.04 ships 3.12, so uv brings 3.11.
RUN uv python install 3.11.14 && uv venv --python 3.11.14 /opt/recserve
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY docker/serving-gpu-requirements.txt docker/
# Every pin of the lock except the CPU onnxruntime, which onnxruntime-gpu replaces.
RUN grep -v '^onnxruntime==' requirements.lock > /tmp/serving.lock \
    && uv pip install --python /opt/recserve/bin/python -r /tmp/serving.lock \
       -r docker/serving-gpu-requirements.txt
COPY operator/ operator/
COPY serving/ serving/
COPY data/ /opt/recserve-data/
RUN uv pip install --python /opt/recserve/bin/python --no-deps . \
    && /opt/recserve/bin/python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()"

FROM ${CUDA_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="recserve-serving" \
      org.opencontainers.image.description="recserve Ray Serve runtime and engine builder (CUDA: torch, onnxruntime-gpu, TensorRT)" \
      org.opencontainers.image.source="https://recserve.dev/source" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# KubeRay runs `ray start` through bash and probes the raylet with wget.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home --shell /bin/bash ray
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/recserve /opt/recserve
COPY --from=build /opt/recserve-data /opt/recserve-data
ENV PATH=/opt/recserve/bin:$PATH \
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
