"""Helpers of the chart, kustomize and GitOps tests: real helm, kubectl and kubeconform binaries.

The binaries come from the e2e tool cache: ``e2e/cluster/build.sh`` builds helm and kubectl
from pinned Go modules, ``scripts/build-manifest-tools.sh`` builds kubeconform and promtool. A missing binary
fails the test with the command that builds it; nothing is skipped.

Schemas for kubeconform are generated offline: the Kubernetes API's OpenAPI v2 document
(``api/openapi-spec/swagger.json`` of the very k8s.io/kubernetes module the e2e API server is
built from) becomes one self-contained JSON schema per kind, and every CRD we ship becomes one
per served version. Strict mode rejects unknown fields, so a typo in a manifest fails.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "recserve"
KUBE_VERSION = "1.37.0"
SCHEMA_TEMPLATE = "{{ .ResourceKind }}_{{ .Group }}_{{ .ResourceAPIVersion }}.json"
# Kinds whose CRDs are not available offline (cert-manager, prometheus-operator): kubeconform
# skips them and the tests check their fields in Python instead.
NO_SCHEMA_KINDS = ("Certificate", "Issuer", "ServiceMonitor", "PrometheusRule")

Doc = dict[str, Any]


def _print_dirs(command: list[str]) -> dict[str, Path]:
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if not line.startswith("[")]  # progress lines
    return {k: Path(v) for k, _, v in (line.partition("=") for line in lines) if v}


@functools.cache
def tool(name: str) -> Path:
    """Path of helm, kubectl, kubeconform or promtool from the e2e tool cache; fails loudly if missing."""
    if name in ("kubeconform", "promtool"):
        builder = ["bash", "scripts/build-manifest-tools.sh"]
        path = _print_dirs([*builder, "--print"])[name] / name
    else:
        # Not --print: build.sh waits for a build in progress (scripts/test.sh starts one in the
        # background) and is instant when every binary is current.
        builder = ["bash", "e2e/cluster/build.sh"]
        dirs = _print_dirs(builder)
        path = dirs["helm" if name == "helm" else "kubernetes"] / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is not built ({path} missing): run `{' '.join(builder)}` first", pytrace=False)
    return path


def kuberay_crds() -> list[Path]:
    """The KubeRay CRDs of the e2e tool cache (the version the e2e cluster runs)."""
    crds = _print_dirs(["bash", "e2e/cluster/build.sh"])["kuberay"] / "crds"
    found = sorted(crds.glob("ray.io_*.yaml"))
    if not found:
        pytest.fail(
            f"KubeRay CRDs missing under {crds}: run `bash e2e/cluster/build.sh` first", pytrace=False
        )
    return found


def run(
    args: list[str | Path], *, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args], cwd=REPO, capture_output=True, text=True, input=stdin, timeout=300
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_all(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_template(
    values: Mapping[str, Any] | None = None,
    *,
    namespace: str = "recserve-system",
    release: str = "rs",
    include_crds: bool = False,
    tmp_path: Path | None = None,
) -> list[Doc]:
    """``helm template`` of the chart with the given values (written to a file, not --set)."""
    args: list[str | Path] = [tool("helm"), "template", release, CHART, "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION]
    if include_crds:
        args.append("--include-crds")
    if values:
        assert tmp_path is not None, "pass tmp_path with values"
        path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        args += ["--values", path]
    return load_all(run(args).stdout)


def helm_template_error(values: Mapping[str, Any], tmp_path: Path) -> str:
    """The error text of a ``helm template`` that must fail."""
    path = tmp_path / "bad-values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    proc = run(
        [tool("helm"), "template", "rs", CHART, "--kube-version", KUBE_VERSION, "--values", path],
        check=False,
    )
    assert proc.returncode != 0, f"helm template accepted {values}:\n{proc.stdout[:2000]}"
    return proc.stderr


def kustomize(path: Path) -> list[Doc]:
    return load_all(run([tool("kubectl"), "kustomize", path]).stdout)


def by_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------- schemas for kubeconform


def _strict(node: Any) -> Any:
    """Close objects against unknown fields and map Kubernetes' OpenAPI quirks onto JSON schema."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if k not in ("properties",)}
    if "properties" in node:
        out["properties"] = {k: _strict(v) for k, v in node["properties"].items()}
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("format", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _swagger() -> dict[str, Any]:
    # The e2e build's module decides the version: the one the test API server is built from.
    proc = subprocess.run(
        ["go", "list", "-mod=readonly", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        cwd=REPO / "e2e" / "cluster" / "tools" / "kubernetes",
        capture_output=True,
        text=True,
        env={**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"},
    )
    path = Path(proc.stdout.strip()) / "api" / "openapi-spec" / "swagger.json"
    if proc.returncode != 0 or not path.is_file():
        pytest.fail(
            f"Kubernetes OpenAPI document not found ({path}; {proc.stderr.strip()}): "
            "run `bash e2e/cluster/build.sh`, which downloads the k8s.io/kubernetes module",
            pytrace=False,
        )
    return json.loads(path.read_text())


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _write(schema_dir: Path, kind: str, group: str, version: str, schema: dict[str, Any]) -> None:
    name = f"{kind.lower()}_{group or 'v1'}_{version}.json"
    (schema_dir / name).write_text(json.dumps(schema))


def write_core_schemas(schema_dir: Path) -> int:
    """One self-contained strict schema per Kubernetes kind, from swagger.json. Returns the count."""
    definitions = _swagger()["definitions"]
    definitions[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    count = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            closure: dict[str, Any] = {}
            todo = [name]
            while todo:
                current = todo.pop()
                if current in closure:
                    continue
                closure[current] = _strict(definitions[current])
                todo.extend(_refs(definitions[current]))
            schema = copy.deepcopy(closure[name])
            schema["definitions"] = closure
            _write(schema_dir, gvk["kind"], gvk["group"], gvk["version"], schema)
            count += 1
    return count


def write_crd_schemas(schema_dir: Path, crds: Iterable[Doc]) -> list[str]:
    """One strict schema per served version of each CRD. Returns ``kind group/version`` names."""
    written = []
    for crd in crds:
        assert crd["kind"] == "CustomResourceDefinition"
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            props = schema.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
            # The API server validates metadata as ObjectMeta; a CRD may only narrow name.
            props["metadata"].pop("additionalProperties", None)
            schema["additionalProperties"] = False
            _write(schema_dir, spec["names"]["kind"], spec["group"], version["name"], schema)
            written.append(f"{spec['names']['kind']} {spec['group']}/{version['name']}")
    return written


def crds_of(paths: Iterable[Path]) -> list[Doc]:
    return [d for p in paths for d in load_all(p.read_text()) if d.get("kind") == "CustomResourceDefinition"]


def kubeconform(docs: list[Doc], schema_dir: Path, *, skip: Iterable[str] = NO_SCHEMA_KINDS) -> str:
    """Validate documents strictly; missing schemas are errors except for the kinds in ``skip``."""
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    args: list[str | Path] = [tool("kubeconform"), "-strict", "-summary", "-output", "text"]
    args += ["-schema-location", f"{schema_dir}/{SCHEMA_TEMPLATE}"]
    if skip:
        args += ["-skip", ",".join(skip)]
    proc = run(args, check=False, stdin=text)
    assert proc.returncode == 0, f"kubeconform rejected the manifests:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
