"""`recserve build` refuses a bad recipe with one specific line, before touching any state."""

from __future__ import annotations

import pytest

from recserve_operator.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backend: onnxruntime\nprecision: fp16\n", "fp16 needs a GPU backend"),
        ("backend: torch\nprecision: int8\nquantization: {mode: static}\n", "static int8 quantization"),
        ("precision: int4\n", "invalid recipe"),
        ("distill: {layers: 0}\n", "invalid recipe"),
        ("prune: {heads: 0.95}\n", "invalid recipe"),
        ("maxBatchSize: 8\nbogus: 1\n", "invalid recipe"),
        ("- just\n- a list\n", "must be a mapping"),
        ("precision: [unclosed\n", "cannot read recipe"),
    ],
)
def test_bad_recipes_exit_2_with_the_reason(tmp_path, capsys, state, text: str, message: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main(["build", "--checkpoint", "models:/ranker/1", "--recipe", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert list(state.iterdir()) == []


def test_flags_override_the_recipe_file(tmp_path) -> None:
    import argparse

    from recserve_operator.commands.build import add_arguments, load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("backend: onnxruntime\nprecision: fp32\nmaxBatchSize: 8\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--checkpoint", "x", "--recipe", str(path), "--precision", "int8"])
    recipe = load_recipe(args)
    assert (recipe.backend, recipe.precision, recipe.max_batch_size) == ("onnxruntime", "int8", 8)
