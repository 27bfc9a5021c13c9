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
"""Tokens of a candidate in the shared-prefix shape (``item [SEP]``); the example's item texts
average 16. The user gets the rest of ``max_len``."""


def _check_budget(max_len: int, item_max_len: int) -> None:
    if not 2 <= item_max_len < max_len - 2:
        raise ValueError(
            f"item_max_len must be between 2 and max_len - 3 ({max_len - 3}), got {item_max_len}"
        )


def user_tokens(tokenizer: PreTrainedTokenizerBase, texts: list[str], user_max_len: int) -> list[list[int]]:
    """``[CLS] user [SEP]`` per text, truncated on its own to ``user_max_len``."""
    return [list(ids) for ids in tokenizer(texts, truncation=True, max_length=user_max_len)["input_ids"]]


def item_tokens(tokenizer: PreTrainedTokenizerBase, texts: list[str], item_max_len: int) -> list[list[int]]:
    """``item [SEP]`` per text, truncated on its own to ``item_max_len``."""
    pieces = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=item_max_len - 1)
    sep = int(tokenizer.sep_token_id)
    return [[*ids, sep] for ids in pieces["input_ids"]]


def layout_users(users: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct users' token ids padded to the longest, and their mask: the user pass's input."""
    user_len = max(len(ids) for ids in users)
    user_ids = np.full((len(users), user_len), pad, dtype=np.int64)
    user_mask = np.zeros((len(users), user_len), dtype=np.int64)
    for row, ids in enumerate(users):
        user_ids[row, : len(ids)] = ids
        user_mask[row, : len(ids)] = 1
    return user_ids, user_mask


def layout_prefix(
    users: list[list[int]], rows: list[int], items: list[list[int]], pad: int
) -> dict[str, np.ndarray]:
    """The model's arrays: distinct ``users``; pair n is ``items[n]`` for ``users[rows[n]]``."""
    user_ids, user_mask = layout_users(users, pad)
    candidates = int(np.bincount(rows, minlength=len(users)).max())
    length = max(len(ids) for ids in items)
    item_ids = np.full((len(users), candidates, length), pad, dtype=np.int64)
    item_mask = np.zeros((len(users), candidates, length), dtype=np.int64)
    slots = np.zeros(len(items), dtype=np.int64)
    filled = [0] * len(users)
    for pair, (row, ids) in enumerate(zip(rows, items, strict=True)):
        column = filled[row]
        filled[row] += 1
        item_ids[row, column, : len(ids)] = ids
        item_mask[row, column, : len(ids)] = 1
        slots[pair] = row * candidates + column
    return {
        "user_ids": user_ids,
        "user_mask": user_mask,
        "item_ids": item_ids,
        "item_mask": item_mask,
        "pair_slots": slots,
    }


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
    _check_budget(max_len, item_max_len)
    users = list(dict.fromkeys(user_texts))
    row_of = {text: row for row, text in enumerate(users)}
    return layout_prefix(
        user_tokens(tokenizer, users, max_len - item_max_len),
        [row_of[text] for text in user_texts],
        item_tokens(tokenizer, item_texts, item_max_len),
        int(tokenizer.pad_token_id or 0),
    )


class PrefixTokenizer:
    """Token ids for a prefix-shaped engine: item texts are cached, because a catalog's items
    recur in every request; a request's user is tokenized once however many chunks it has."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_len: int, item_max_len: int, capacity: int = 100_000
    ) -> None:
        _check_budget(max_len, item_max_len)
        self.tokenizer = tokenizer
        self.user_max_len = max_len - item_max_len
        self.item_max_len = item_max_len
        self.pad = int(tokenizer.pad_token_id or 0)
        self.capacity = capacity
        self._items: dict[str, list[int]] = {}

    def users(self, texts: list[str]) -> list[list[int]]:
        return user_tokens(self.tokenizer, texts, self.user_max_len)

    def items(self, texts: list[str]) -> list[list[int]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._items))
        if missing:
            if len(self._items) + len(missing) > self.capacity:
                self._items.clear()
            self._items.update(
                zip(missing, item_tokens(self.tokenizer, missing, self.item_max_len), strict=True)
            )
        return [self._items[t] for t in texts]


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
