"""``recserve validate``: exit codes and one ``FILE[:doc N] path: message`` line per problem."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from recserve_operator.cli import main
from recserve_operator.validate import ManifestError, load_model, load_models

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml"))

HEAD = """\
apiVersion: recserve.dev/v1alpha1
kind: RecommenderModel
metadata:
  name: ranker
spec:
  checkpoint:
    uri: models:/ranker/1
"""


def run(capsys: pytest.CaptureFixture[str], *files: str | Path) -> tuple[int, list[str]]:
    code = main(["validate", *(str(f) for f in files)])
    return code, capsys.readouterr().out.splitlines()


def write(tmp_path: Path, text: str, name: str = "model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(EXAMPLES) >= 3
    code, lines = run(capsys, *EXAMPLES)
    assert code == 0
    assert lines == [f"ok: {len(EXAMPLES)} RecommenderModel(s) in {len(EXAMPLES)} file(s)"]


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            "  serving:\n    autoscaling: {minReplicas: 5, maxReplicas: 3}\n",
            "spec.serving.autoscaling.minReplicas: must be <= maxReplicas (got 5 > 3)",
        ),
        (
            "  rollout:\n    canary:\n      checkpoint: {uri: 'models:/ranker/2'}\n"
            "      steps: [{weight: 25, pause: 1m}, {weight: 5, pause: 1m}]\n"
            "      analysis: {maxErrorRate: 0.01}\n",
            "spec.rollout.canary.steps[1].weight: must be > steps[0].weight",
        ),
        (
            "  rollout:\n    canary:\n      checkpoint: {uri: 'models:/ranker/2'}\n"
            "      steps: [{weight: 150, pause: 1m}]\n      analysis: {maxErrorRate: 0.01}\n",
            "spec.rollout.canary.steps[0].weight: must be <= 100 (got 150)",
        ),
        (
            "  optimization: {backend: onnx}\n",
            "spec.optimization.backend: must be one of 'auto', 'onnxruntime', 'torch' or 'tensorrt'",
        ),
        (
            "  serving:\n    resources: {memory: 8GB}\n",
            "spec.serving.resources.memory: must be a Kubernetes memory quantity",
        ),
        ("  replicas: 3\n", "spec.replicas: unknown field; allowed: checkpoint, task"),
        (
            "  serving:\n    batching: {maxBatchSize: 128}\n",
            "spec.serving.batching.maxBatchSize: must be <= optimization.maxBatchSize",
        ),
    ],
)
def test_each_problem_is_one_line_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: str
) -> None:
    path = write(tmp_path, HEAD + body)
    code, lines = run(capsys, path)
    assert code == 2
    assert any(out.startswith(f"{path} {line}") for out in lines), lines


def test_all_problems_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = "  task: retrieval\n  serving:\n    retrieval: {defaultK: 0}\n    parallelism: {tensor: 99}\n"
    path = write(tmp_path, HEAD + body)
    code, lines = run(capsys, path)
    assert code == 2
    assert [line.split(":")[0] for line in lines] == [
        f"{path} spec.task",
        f"{path} spec.serving.parallelism.tensor",
        f"{path} spec.serving.retrieval.defaultK",
    ]


def test_documents_are_numbered_when_a_file_has_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = HEAD.replace("models:/ranker/1", "ranker-v1")
    path = write(tmp_path, f"{HEAD}---\n{bad}---\n- not a mapping\n")
    code, lines = run(capsys, path)
    assert code == 2
    assert lines[0].startswith(f"{path}:doc 2 spec.checkpoint.uri: must be models:/NAME/VERSION")
    assert lines[1] == f"{path}:doc 3: document must be a mapping (got list)"
    assert len(lines) == 2


def test_several_files_report_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, HEAD, "good.yaml")
    missing = tmp_path / "missing.yaml"
    broken = write(tmp_path, "spec: [unclosed\n", "broken.yaml")
    code, lines = run(capsys, good, missing, broken)
    assert code == 2
    assert lines[0] == f"{missing}: no such file"
    assert lines[1].startswith(f"{broken}: invalid YAML at line 2, column 1:")
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "invalid YAML at line 2, column 1: duplicate key 'a'"),
        ("", "holds no YAML document"),
        ("---\n", "holds no YAML document"),
    ],
)
def test_file_level_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = write(tmp_path, text)
    code, lines = run(capsys, path)
    assert (code, lines) == (2, [f"{path}: {message}"])


def test_a_directory_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(capsys, tmp_path)
    assert (code, lines) == (2, [f"{tmp_path}: is a directory, not a manifest file"])


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(HEAD + "  task: ranking\n"))
    assert run(capsys, "-") == (0, ["ok: 1 RecommenderModel(s) in 1 file(s)"])


def test_other_kinds_are_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, lines = run(capsys, path)
    assert code == 2
    assert f"{path} kind: must be 'RecommenderModel' (got 'ConfigMap')" in lines


def test_load_model_raises_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "  serving:\n    autoscaling: {minReplica: 1}\n")
    with pytest.raises(ManifestError) as caught:
        load_model(path)
    assert str(caught.value).startswith(f"{path} spec.serving.autoscaling.minReplica: unknown field")
    assert "\n" not in str(caught.value)


def test_load_model_counts_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "  task: retrieval\n  serving:\n    retrieval: {defaultK: 0}\n")
    with pytest.raises(ManifestError) as caught:
        load_model(path)
    assert str(caught.value).endswith("(and 1 more; run `recserve validate` to list them)")
    assert len(caught.value.problems) == 2


def test_load_model_needs_exactly_one(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEAD}---\n{HEAD}")
    assert len(load_models(path)) == 2
    with pytest.raises(ManifestError, match="holds 2 RecommenderModels"):
        load_model(path)


def test_load_model_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.yaml: no such file"):
        load_model(tmp_path / "nope.yaml")
