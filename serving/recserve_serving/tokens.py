"""Tokenizing (user text, item text) pairs: the part of the model every engine runs.

It is apart from ``model`` because ``model`` is torch (the ranker module, checkpoints,
training), and the serving image has no torch: an ONNX Runtime engine needs only its saved
tokenizer and this. transformers imports its tokenizers without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from recserve_serving.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def encode(
    tokenizer: PreTrainedTokenizerBase, user_texts: list[str], item_texts: list[str], max_len: int
) -> dict[str, Any]:
    """Tokenize pairs; ``longest_first`` trims the (usually longer) user side first.

    ``only_first`` would keep the candidate whole but fails outright when a candidate's text
    alone exceeds ``max_len``; a served request must never fail on a long title.
    """
    if len(user_texts) != len(item_texts):
        raise ValueError(f"{len(user_texts)} user texts but {len(item_texts)} item texts")
    return dict(
        tokenizer(
            user_texts,
            item_texts,
            truncation="longest_first",
            max_length=max_len,
            padding=True,
            return_tensors="np",
            return_token_type_ids=True,
        )
    )


DEFAULT_ITEM_MAX_LEN = 32
"""Tokens of a candidate in the shared-prefix shape (``item [SEP]``); MovieLens item texts
average 16. The user gets the rest of ``max_len``."""


def encode_prefix(
    tokenizer: PreTrainedTokenizerBase,
    user_texts: list[str],
    item_texts: list[str],
    max_len: int,
    item_max_len: int = DEFAULT_ITEM_MAX_LEN,
) -> dict[str, np.ndarray]:
    """Pairs in the shared-prefix layout (see ``prefix``): each distinct user text once.

    The user side is truncated on its own (to ``max_len - item_max_len``) and the item side on
    its own, never jointly: a joint truncation would cut a user differently for each candidate
    and there would be no prefix to share.
    """
    if len(user_texts) != len(item_texts):
        raise ValueError(f"{len(user_texts)} user texts but {len(item_texts)} item texts")
    if not 2 <= item_max_len < max_len - 2:
        raise ValueError(
            f"item_max_len must be between 2 and max_len - 3 ({max_len - 3}), got {item_max_len}"
        )
    users = list(dict.fromkeys(user_texts))
    user_row = {text: row for row, text in enumerate(users)}
    encoded_users = tokenizer(
        users, truncation=True, max_length=max_len - item_max_len, padding=True, return_tensors="np"
    )
    pieces = tokenizer(item_texts, add_special_tokens=False, truncation=True, max_length=item_max_len - 1)
    sep, pad = int(tokenizer.sep_token_id), int(tokenizer.pad_token_id or 0)
    rows = [user_row[text] for text in user_texts]
    counts = np.bincount(rows, minlength=len(users))
    candidates = int(counts.max())
    length = max(len(ids) for ids in pieces["input_ids"]) + 1
    item_ids = np.full((len(users), candidates, length), pad, dtype=np.int64)
    item_mask = np.zeros((len(users), candidates, length), dtype=np.int64)
    slots = np.zeros(len(item_texts), dtype=np.int64)
    filled = np.zeros(len(users), dtype=np.int64)
    for pair, (row, ids) in enumerate(zip(rows, pieces["input_ids"], strict=True)):
        column = filled[row]
        filled[row] += 1
        tokens = [*ids, sep]
        item_ids[row, column, : len(tokens)] = tokens
        item_mask[row, column, : len(tokens)] = 1
        slots[pair] = row * candidates + column
    return {
        "user_ids": np.asarray(encoded_users["input_ids"], dtype=np.int64),
        "user_mask": np.asarray(encoded_users["attention_mask"], dtype=np.int64),
        "item_ids": item_ids,
        "item_mask": item_mask,
        "pair_slots": slots,
    }


SHAPES = ("cross", "prefix")
"""Model shapes: ``cross`` (full attention over the pair) and ``prefix`` (the user once per request)."""


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    shape: str,
    user_texts: list[str],
    item_texts: list[str],
    max_len: int,
    item_max_len: int = DEFAULT_ITEM_MAX_LEN,
) -> dict[str, np.ndarray]:
    """The model inputs of pairs for a model of ``shape``: what every engine and trainer feeds."""
    if shape == "prefix":
        return encode_prefix(tokenizer, user_texts, item_texts, max_len, item_max_len)
    return encode(tokenizer, user_texts, item_texts, max_len)


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a checkpoint or an engine; a bad file is a CheckpointError."""
    missing = [n for n in TOKENIZER_FILES if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {directory}: tokenizer file(s) missing: {', '.join(missing)}")
    try:
        return AutoTokenizer.from_pretrained(directory)
    except Exception as error:  # tokenizers raises bare Exception subclasses on bad JSON
        raise CheckpointError(f"{directory}: tokenizer files are corrupt ({error})") from None
