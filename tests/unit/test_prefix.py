"""The shared-prefix ranker: the cached form equals the uncached one, and BERT's own arithmetic.

A tiny random BERT (2 layers, 4 heads, width 32) on the real MiniLM tokenizer keeps this
pure and fast. Tolerance: 1e-5 absolute on fp32 scores (the two forms sum in different
orders; measured differences are ~1e-7).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from recserve_serving.errors import CheckpointError
from recserve_serving.model import (
    Checkpoint,
    CheckpointMeta,
    PrefixRanker,
    load_checkpoint,
    prune_layer,
    save_checkpoint,
)
from recserve_serving.paths import base_model_path
from recserve_serving.prefix import _bias, full_sequence_scores, user_layer
from recserve_serving.tokens import encode_prefix

pytestmark = pytest.mark.unit

TOLERANCE = 1e-5
USERS = [
    "likes: Toy Story (1995); Heat (1995) | genres: Comedy, Action",
    "likes: nothing yet",
    "likes: Alien (1979); Aliens (1986); The Thing (1982) | genres: Horror, Sci-Fi | tags: dark, creepy",
]
ITEMS = [
    "Jumanji (1995). Adventure, Children, Fantasy | popular",
    "Heat (1995). Action, Crime, Thriller",
    "Up",
    "Casino (1995). Crime, Drama | very popular | tags: mafia, las vegas, scorsese, de niro, long",
]


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        attn_implementation="eager",
    )
    encoder = BertModel(config, add_pooling_layer=False).eval()
    meta = CheckpointMeta(max_len=40, shape="prefix", item_max_len=12)
    return Checkpoint(PrefixRanker(encoder).eval(), tokenizer, meta)


def pairs(n: int) -> tuple[list[str], list[str]]:
    users = [USERS[i % len(USERS)] for i in range(n)]
    items = [ITEMS[(i * 3 + 1) % len(ITEMS)] for i in range(n)]
    return users, items


@torch.inference_mode()
def test_cached_scores_equal_the_full_sequence_under_the_prefix_mask(checkpoint):
    users, items = pairs(10)
    inputs = checkpoint.encode(users, items)
    cached = checkpoint.model(**inputs)
    uncached = full_sequence_scores(checkpoint.model.encoder, checkpoint.model.head, **inputs)
    assert cached.shape == (10,)
    torch.testing.assert_close(cached, uncached, atol=TOLERANCE, rtol=0)


@torch.inference_mode()
def test_a_pair_scores_the_same_alone_and_in_any_batch(checkpoint):
    users, items = pairs(10)
    together = checkpoint.model(**checkpoint.encode(users, items))
    alone = torch.cat(
        [checkpoint.model(**checkpoint.encode([u], [i])) for u, i in zip(users, items, strict=True)]
    )
    reordered = checkpoint.model(**checkpoint.encode(users[::-1], items[::-1])).flip(0)
    torch.testing.assert_close(together, alone, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(together, reordered, atol=TOLERANCE, rtol=0)


@torch.inference_mode()
def test_the_user_pass_is_berts_own_layer_arithmetic(checkpoint):
    """The layer is written out over HF's modules; on the user's tokens alone it must be HF's."""
    encoded = encode_prefix(checkpoint.tokenizer, USERS, ITEMS[:3], 40, 12)
    ids, mask = torch.as_tensor(encoded["user_ids"]), torch.as_tensor(encoded["user_mask"])
    encoder = checkpoint.model.encoder
    expected = encoder(
        input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
    ).last_hidden_state
    hidden = encoder.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
    for layer in encoder.encoder.layer:
        hidden, _, _ = user_layer(layer, hidden, _bias(mask, hidden.dtype)[:, None, None, :])
    valid = mask.bool()
    torch.testing.assert_close(hidden[valid], expected[valid], atol=TOLERANCE, rtol=0)


@torch.inference_mode()
def test_pruned_heads_and_neurons_keep_cached_equal_to_uncached(checkpoint):
    pruned = Checkpoint(
        PrefixRanker(BertModel(checkpoint.model.encoder.config, add_pooling_layer=False)).eval(),
        checkpoint.tokenizer,
        checkpoint.meta,
    )
    pruned.model.load_state_dict(checkpoint.model.state_dict())
    prune_layer(pruned.model.encoder.encoder.layer[0], [0, 2], list(range(40)))
    users, items = pairs(6)
    inputs = pruned.encode(users, items)
    torch.testing.assert_close(
        pruned.model(**inputs),
        full_sequence_scores(pruned.model.encoder, pruned.model.head, **inputs),
        atol=TOLERANCE,
        rtol=0,
    )


def test_encoding_shares_each_user_and_truncates_each_side_alone(checkpoint):
    users, items = pairs(8)
    encoded = encode_prefix(checkpoint.tokenizer, users, items, max_len=40, item_max_len=12)
    assert encoded["user_ids"].shape[0] == len(USERS)
    assert encoded["user_ids"].shape[1] <= 40 - 12
    assert encoded["item_ids"].shape[2] <= 12
    sep = checkpoint.tokenizer.sep_token_id
    candidates = encoded["item_ids"].shape[1]
    for pair, slot in enumerate(encoded["pair_slots"]):
        row, column = divmod(int(slot), candidates)
        assert row == USERS.index(users[pair])
        tokens = encoded["item_ids"][row, column][encoded["item_mask"][row, column] == 1]
        assert tokens[-1] == sep
        expected = checkpoint.tokenizer(items[pair], add_special_tokens=False)["input_ids"][:11]
        assert tokens[:-1].tolist() == expected
    assert len(set(encoded["pair_slots"].tolist())) == len(users)


def test_encoding_refuses_an_item_budget_that_leaves_no_user(checkpoint):
    with pytest.raises(ValueError, match="item_max_len must be between 2 and max_len - 3"):
        encode_prefix(checkpoint.tokenizer, ["u"], ["i"], max_len=16, item_max_len=14)


def test_the_shape_survives_a_round_trip_and_an_unknown_shape_is_refused(checkpoint, tmp_path):
    save_checkpoint(checkpoint, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded.model, PrefixRanker)
    assert (loaded.meta.shape, loaded.meta.item_max_len) == ("prefix", 12)
    users, items = pairs(4)
    with torch.inference_mode():
        np.testing.assert_allclose(
            loaded.model(**loaded.encode(users, items)).numpy(),
            checkpoint.model(**checkpoint.encode(users, items)).numpy(),
            atol=TOLERANCE,
        )
    meta = (tmp_path / "ck" / "recserve.json").read_text().replace('"prefix"', '"sideways"')
    (tmp_path / "ck" / "recserve.json").write_text(meta)
    with pytest.raises(CheckpointError, match="model shape 'sideways'"):
        load_checkpoint(tmp_path / "ck")


def test_an_engine_chunks_candidates_against_each_users_states_once(checkpoint, tmp_path):
    """The torch engine's chunked scoring (users once, chunks of 4 sorted by length, states
    sliced to each chunk's users) gives each pair the score of one whole-batch forward."""
    from recserve_serving.engine.manifest import CheckpointRef, EngineManifest
    from recserve_serving.engine.torch_backend import TorchEngine
    from recserve_serving.recipe import OptimizationRecipe

    save_checkpoint(checkpoint, tmp_path)
    manifest = EngineManifest(
        key="test",
        checkpoint=CheckpointRef(uri="file:///tiny", digest="sha256:0", name="tiny"),
        recipe=OptimizationRecipe(backend="torch", precision="fp32", max_batch_size=4),
        backend="torch",
        backend_version=torch.__version__,
        precision="fp32",
        hardware="cpu",
        max_sequence_length=40,
        model_file="model.safetensors",
        model_shape="prefix",
        item_max_length=12,
        files={},
    )
    engine = TorchEngine(tmp_path, manifest, threads=1)
    users, items = pairs(23)
    with torch.inference_mode():
        expected = checkpoint.model(**checkpoint.encode(users, items)).numpy()
    np.testing.assert_allclose(engine.score(users, items), expected, atol=TOLERANCE)
