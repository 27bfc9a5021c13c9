# syntax=docker/dockerfile:1.7
# The builder image for CPU: engine build Jobs (`recserve build`: export, prune, distill,
# quantize to ONNX Runtime int8, the quality gate) and the retrieval index they write into the
# artifact store. torch is the CPU build of the lock's version; no CUDA libraries at all.
# Build from the repository root:
#   docker build -f docker/builder-cpu.Dockerfile -t ghcr.io/recserve/recserve-builder:0.1.0 .
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
COPY data/ /opt/recserve-data/
RUN uv pip install --python /opt/recserve/bin/python --no-deps . \
    && /opt/recserve/bin/python -c "import torch, onnxruntime; assert not torch.cuda.is_available()"

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="recserve-builder" \
      org.opencontainers.image.description="recserve engine builder for CPU (torch, ONNX Runtime)" \
      org.opencontainers.image.source="https://recserve.dev/source" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
RUN useradd --uid 1000 --create-home --shell /bin/bash ray
COPY --from=build /opt/recserve /opt/recserve
COPY --from=build /opt/recserve-data /opt/recserve-data
ENV PATH=/opt/recserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RECSERVE_BUNDLED_DATA=/opt/recserve-data
# Build pods run as the serving pods' uid, with the same home (the planners' HOME_MOUNT).
USER 1000:1000
WORKDIR /home/ray
ENTRYPOINT ["recserve"]
CMD ["--help"]
