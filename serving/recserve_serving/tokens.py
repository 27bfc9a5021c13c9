"""Tokenizing (user text, item text) pairs: the part of the model every engine runs.

It is apart from ``model`` because ``model`` is torch (the ranker module, checkpoints,
training), and the serving image has no torch: an ONNX Runtime engine needs only its saved
tokenizer and this. transformers imports its tokenizers without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a checkpoint or an engine; a bad file is a CheckpointError."""
    missing = [n for n in TOKENIZER_FILES if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {directory}: tokenizer file(s) missing: {', '.join(missing)}")
    try:
        return AutoTokenizer.from_pretrained(directory)
    except Exception as error:  # tokenizers raises bare Exception subclasses on bad JSON
        raise CheckpointError(f"{directory}: tokenizer files are corrupt ({error})") from None
