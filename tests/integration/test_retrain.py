"""A retrain end to end on a real (tiny) ranker, a real embedded registry and a real feedback log.

The parent is MiniLM's first two layers, prefix-shaped and untrained beyond its base weights
(the point here is the retrain's mechanics, not its quality), registered "as of" T0, the
example data's 99th-percentile timestamp: what the example has after T0 is new, as in the
replayed-week scenario, plus logged clicks of pseudonymized users and one erased user.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recserve_serving.example_data import EXAMPLE_DATA
from recserve_serving.lineage import (
    CODE_VERSION_TAG,
    DATA_CUTOFF_TAG,
    DATA_DIGEST_TAG,
    DATA_WINDOW_TAG,
    DP_DELTA_TAG,
    DP_EPSILON_TAG,
    FEEDBACK_DIGEST_TAG,
    PARENT_VERSION_TAG,
    REASON_TAG,
    VERDICT_TAG,
)
from recserve_serving.loaded_data import LoadedData
from recserve_serving.online.feedback_log import FeedbackEvent, FeedbackLog, read_feedback
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.registry import CHAMPION, Registry
from recserve_serving.retrain import NOTHING, PROMOTED, REJECTED, RetrainInputs, RetrainOptions, retrain
from recserve_serving.trainingspec import TrainingBudget, TrainingPrivacy, TrainingSpec

pytestmark = pytest.mark.integration

NAME = "tiny-ranker"
KEY = b"retrain-test-key-0123456789abcdef"
FAST = RetrainOptions(eval_users=15, eval_candidates=20)


@pytest.fixture(scope="module")
def loaded() -> LoadedData:
    from recserve_serving.tabular import load_data

    return load_data(EXAMPLE_DATA)


@pytest.fixture(scope="module")
def t0(loaded: LoadedData) -> int:
    return int(loaded.interactions.timestamp.quantile(0.99))


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recserve_serving.model import new_ranker, save_checkpoint

    out = tmp_path_factory.mktemp("parent") / "checkpoint"
    save_checkpoint(new_ranker(max_len=64, layers=2, shape="prefix"), out)
    (out / "fusion.json").write_text('{"stands": "for the parent fusion head"}\n')
    return out


@pytest.fixture
def registry(state: Path, parent_dir: Path, t0: int) -> Registry:
    registry = Registry(state)
    registry.register(NAME, parent_dir, {"ndcg@10": 0.1}, tags={DATA_CUTOFF_TAG: str(t0)})
    return registry


@pytest.fixture(scope="module")
def feedback(tmp_path_factory: pytest.TempPathFactory, loaded: LoadedData, t0: int) -> Path:
    """Clicks after T0 by users of the base data (their pseudonyms), twice (at-least-once), and
    the erasure of one of them."""
    directory = tmp_path_factory.mktemp("feedback")
    pseudonym = Pseudonymizer(KEY)
    users = loaded.interactions.user_id.drop_duplicates().head(12).tolist()
    items = loaded.items.item_id.head(200).tolist()
    rng = np.random.default_rng(0)
    events = [
        FeedbackEvent(
            user_id=pseudonym.user(user),
            item_id=int(rng.choice(items)),
            event="click",
            ts=float(t0 + 60 * (i + 1)),
        )
        for i, user in enumerate(users * 5)
    ]
    log = FeedbackLog(directory, "test")
    log.append(events)
    log.append(events[:10])
    log.tombstone([pseudonym.user(users[0])])
    log.close()
    return directory


def _inputs(loaded: LoadedData, feedback: Path) -> RetrainInputs:
    records = read_feedback(feedback)
    return RetrainInputs(loaded, records.events, records.erased, Pseudonymizer(KEY).user)


def _spec(**changes: object) -> TrainingSpec:
    base = {"min_new_interactions": 50, "budget": TrainingBudget(steps=4, batch_size=16)}
    return TrainingSpec.model_validate({**base, **changes})


def _scratch(state: Path) -> list[Path]:
    return [p for p in state.iterdir() if p.name.startswith("recserve-retrain-")]


def test_a_version_no_worse_is_registered_with_lineage_and_becomes_the_candidate(
    registry: Registry, loaded: LoadedData, feedback: Path, t0: int
) -> None:
    result = retrain(registry, NAME, _spec(max_drop=1.0), _inputs(loaded, feedback), FAST)
    assert (result.verdict, result.parent_version, result.new_version) == (PROMOTED, "1", "2")
    assert registry.resolve(f"models:/{NAME}@candidate").version == "2"
    assert registry.resolve(f"models:/{NAME}@{CHAMPION}").version == "1"
    tags = registry.version_tags(NAME, "2")
    assert tags[PARENT_VERSION_TAG] == "1" and tags[VERDICT_TAG] == PROMOTED
    assert int(tags[DATA_CUTOFF_TAG]) > t0
    start, end = (int(x) for x in tags[DATA_WINDOW_TAG].split(".."))
    assert start == t0 + 1 and end == int(tags[DATA_CUTOFF_TAG]) < result.holdout_start  # type: ignore[operator]
    assert tags[DATA_DIGEST_TAG] == loaded.digest and len(tags[FEEDBACK_DIGEST_TAG]) == 64
    assert tags[CODE_VERSION_TAG].startswith("recserve") or tags[CODE_VERSION_TAG].startswith("git")
    assert "ndcg@10" in tags[REASON_TAG]
    counts = result.counts
    # The 10 resent events less the erased user's (read_feedback drops those before the erasure).
    assert counts["duplicate_events"] == 9 and counts["erased_excluded"] > 5
    assert counts["new"] >= 50 and counts["holdout_users"] >= 1
    assert counts["train_groups_new"] + counts["train_groups_replay"] == 4 * 16 // 4
    assert set(result.parent_metrics) >= {"ndcg@10", "auc", "hitrate@10"}
    new = registry.resolve(f"models:/{NAME}/2")
    assert (new.path / "fusion.json").read_text() == '{"stands": "for the parent fusion head"}\n'
    assert json.loads((new.path / "recserve.json").read_text())["extra"]["retrained_from"].endswith(
        "@champion"
    )
    assert not _scratch(registry.state)


def test_a_worse_version_is_registered_rejected_and_the_alias_stays(
    registry: Registry, loaded: LoadedData, feedback: Path
) -> None:
    # No version can be 2 better than its parent on a metric in [0, 1]: the gate must refuse.
    impossible = _spec().model_copy(update={"max_drop": -2.0})
    result = retrain(registry, NAME, impossible, _inputs(loaded, feedback), FAST)
    assert (result.verdict, result.new_version) == (REJECTED, "2")
    assert "below the floor" in result.reason and f"{result.parent_metrics['ndcg@10']:.4f}" in result.reason
    assert registry.version_tags(NAME, "2")[VERDICT_TAG] == REJECTED
    with pytest.raises(Exception, match="no alias @candidate"):
        registry.resolve(f"models:/{NAME}@candidate")
    assert not _scratch(registry.state)


def test_too_little_new_data_registers_nothing_and_says_why(
    registry: Registry, loaded: LoadedData, feedback: Path
) -> None:
    result = retrain(registry, NAME, _spec(min_new_interactions=10**6), _inputs(loaded, feedback), FAST)
    assert result.verdict == NOTHING and result.new_version is None
    assert "minNewInteractions asks for 1000000" in result.reason
    assert registry.latest_version(NAME) == "1"


def test_a_private_retrain_records_its_epsilon_and_delta(
    registry: Registry, loaded: LoadedData, feedback: Path
) -> None:
    spec = _spec(max_drop=1.0, privacy=TrainingPrivacy(dp_epsilon=8.0, dp_delta=1e-5))
    result = retrain(registry, NAME, spec, _inputs(loaded, feedback), RetrainOptions(steps=2, eval_users=10))
    assert result.new_version == "2" and result.dp_epsilon is not None
    assert 0 < result.dp_epsilon <= 8.0 * 1.01
    tags = registry.version_tags(NAME, "2")
    assert float(tags[DP_EPSILON_TAG]) == pytest.approx(result.dp_epsilon, rel=1e-4)
    assert float(tags[DP_DELTA_TAG]) == 1e-5


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_per_example_gradients_add_up_to_the_batch_gradient() -> None:
    """Opacus's hooks see each Linear twice per forward in the prefix layout (user pass, candidate
    pass); their per-example gradients must still sum to the ordinary gradient."""
    import torch
    from opacus import GradSampleModule

    from recserve_serving.data import Pair
    from recserve_serving.dp import _Groups, _tensors
    from recserve_serving.model import new_ranker
    from recserve_serving.train import freeze_lower, listwise_loss

    torch.manual_seed(0)
    checkpoint = new_ranker(max_len=64, layers=2, shape="prefix")
    freeze_lower(checkpoint, 1)
    pairs = []
    for e in range(5):
        user = f"likes: Movie {e}; Movie {e + 1} | categories: Drama"
        pairs += [Pair(user, f"Film {e} | hit", 1.0)] + [
            Pair(user, f"Other {e} {k} | niche", 0.0) for k in range(3)
        ]
    tensors = _tensors(checkpoint, pairs, 4)
    module = _Groups(checkpoint)
    for layer in module.modules():  # no dropout: one deterministic forward
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0
    sampled = GradSampleModule(module.train(), loss_reduction="sum")
    scores = sampled(*tensors[:4])
    loss = listwise_loss(4)(scores.reshape(-1), tensors[4].reshape(-1)) * len(scores)
    loss.backward()
    trainable = [p for p in module.parameters() if p.requires_grad]
    scale = max(float(p.grad.abs().max()) for p in trainable)
    assert len(trainable) == 18  # the upper layer's Linear/LayerNorm tensors and the head
    for parameter in trainable:
        assert parameter.grad_sample.shape[0] == 5
        assert torch.allclose(parameter.grad_sample.sum(0), parameter.grad, atol=1e-5 * scale)
