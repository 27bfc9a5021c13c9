"""What one release of recserve is: its version, the images built for it, the Ray inside them.

The version is the package's own (pyproject.toml). The Dockerfiles, the chart and
requirements.lock cannot import Python, so tests/unit/test_release.py ties each of them to
the names here.
"""

from __future__ import annotations

from importlib.metadata import version

VERSION = version("recserve")
RAY_VERSION = "2.60.0"
"""The Ray that requirements.lock pins and the serving images install; KubeRay must start the
same version, or its head and the image's Ray would not talk."""

REGISTRY = "ghcr.io/recserve"
SERVING_IMAGE = f"{REGISTRY}/recserve-serving:{VERSION}"
"""The serving image for CPU (router and rankers on ONNX Runtime, no torch): the default,
because any node can run it."""
BUILDER_IMAGE = f"{REGISTRY}/recserve-builder:{VERSION}"
"""The builder image for CPU (torch, for build Jobs): the default builder."""
SERVING_CUDA_IMAGE = f"{SERVING_IMAGE}-cuda"
"""Serving and builder in one on NVIDIA GPUs (torch is there anyway, for TensorRT builds)."""
OPERATOR_IMAGE = f"{REGISTRY}/recserve-operator:{VERSION}"
IMAGES = {
    "operator.Dockerfile": OPERATOR_IMAGE,
    "serving.Dockerfile": SERVING_CUDA_IMAGE,
    "serving-cpu.Dockerfile": SERVING_IMAGE,
    "builder-cpu.Dockerfile": BUILDER_IMAGE,
}
"""The image each file in docker/ builds (its ``docker build -t``)."""
