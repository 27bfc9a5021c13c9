"""The cross-encoder ranker and its on-disk checkpoint format.

A checkpoint directory holds the encoder as Hugging Face files (``config.json``,
``model.safetensors``), the tokenizer (``tokenizer.json``, ``tokenizer_config.json``), the
scoring head (``head.safetensors``) and ``recserve.json`` (format version, base model,
sequence length, structural changes such as pruned heads). Keeping the encoder in HF's own
format means any HF tool can open it; the small JSON carries what HF's config cannot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from recserve_serving.errors import CheckpointError
from recserve_serving.paths import base_model_path
from recserve_serving.prefix import PREFIX_INPUTS, prefix_scores
from recserve_serving.tokens import DEFAULT_ITEM_MAX_LEN, SHAPES, encode_pairs, load_tokenizer

FORMAT_VERSION = 1
META_FILE = "recserve.json"
HEAD_FILE = "head.safetensors"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class CheckpointMeta:
    """What ``config.json`` cannot say: our format, the base, and structural edits."""

    base: str = BASE_MODEL
    max_len: int = 64
    # "cross": full attention over the pair; "prefix": the user side is shared by all of a
    # request's candidates (see ``prefix``), which then get ``item_max_len`` tokens each.
    shape: str = "cross"
    item_max_len: int = DEFAULT_ITEM_MAX_LEN
    format_version: int = FORMAT_VERSION
    # layer index -> kept attention heads, for structurally pruned encoders.
    heads_per_layer: dict[str, int] = field(default_factory=dict)
    # layer index -> kept FFN neurons.
    ffn_per_layer: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Ranker(nn.Module):
    """Encoder + linear head on the mask-aware mean of the last hidden states.

    Mean pooling, not [CLS]: all-MiniLM-L6-v2 was trained with mean pooling, so the head
    starts on top of a representation that already means something.
    """

    def __init__(self, encoder: PreTrainedModel, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head if head is not None else nn.Linear(encoder.config.hidden_size, 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits.squeeze(-1)


class PrefixRanker(Ranker):
    """The same encoder and head under the shared-prefix mask: takes ``encode_prefix`` inputs."""

    def forward(  # type: ignore[override]  # the prefix layout has its own inputs
        self,
        user_ids: torch.Tensor,
        user_mask: torch.Tensor,
        item_ids: torch.Tensor,
        item_mask: torch.Tensor,
        pair_slots: torch.Tensor,
    ) -> torch.Tensor:
        return prefix_scores(self.encoder, self.head, user_ids, user_mask, item_ids, item_mask, pair_slots)


def ranker_class(shape: str) -> type[Ranker]:
    if shape not in SHAPES:
        raise ValueError(f"model shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return PrefixRanker if shape == "prefix" else Ranker


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A smaller Linear keeping output rows (dim 0) or input columns (dim 1) in ``index``."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias.detach().clone() if linear.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias.index_select(0, index).clone()
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=bias is not None)
    new.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias, requires_grad=linear.weight.requires_grad)
    return new


def prune_layer(layer: nn.Module, keep_heads: list[int], keep_neurons: list[int]) -> None:
    """Physically remove attention heads and FFN neurons from one BERT layer.

    The Q/K/V projections lose the rows of dropped heads, the attention output projection
    the matching columns; the FFN's first Linear loses rows and the second columns. The
    matrices get smaller, so every backend does less work, not just multiplies by zero.
    """
    attention: Any = layer.attention
    ffn_in: Any = layer.intermediate
    ffn_out: Any = layer.output
    size = attention.self.attention_head_size
    heads = sorted(keep_heads)
    if not heads or not keep_neurons:
        raise ValueError("a layer must keep at least one head and one FFN neuron")
    rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads])
    for name in ("query", "key", "value"):
        setattr(attention.self, name, _slice_linear(getattr(attention.self, name), rows, 0))
    attention.output.dense = _slice_linear(attention.output.dense, rows, 1)
    attention.self.num_attention_heads = len(heads)
    attention.self.all_head_size = len(heads) * size
    neurons = torch.tensor(sorted(keep_neurons))
    ffn_in.dense = _slice_linear(ffn_in.dense, neurons, 0)
    ffn_out.dense = _slice_linear(ffn_out.dense, neurons, 1)


def reshape_encoder(encoder: PreTrainedModel, heads: dict[str, int], neurons: dict[str, int]) -> None:
    """Give a freshly built encoder the shapes of a pruned one, before its weights are loaded."""
    layers: Any = encoder.encoder.layer  # type: ignore[union-attr]
    for index in sorted(set(heads) | set(neurons), key=int):
        layer = layers[int(index)]
        n_heads = heads.get(index, layer.attention.self.num_attention_heads)
        n_neurons = neurons.get(index, layer.intermediate.dense.out_features)
        prune_layer(layer, list(range(n_heads)), list(range(n_neurons)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Checkpoint:
    model: Ranker
    tokenizer: PreTrainedTokenizerBase
    meta: CheckpointMeta

    def encode(
        self,
        user_texts: list[str],
        item_texts: list[str],
        max_len: int | None = None,
        device: str | torch.device = "cpu",
    ) -> dict[str, torch.Tensor]:
        """The model's inputs for these pairs, in its shape's layout (training and scoring)."""
        length = self.meta.max_len if max_len is None else max_len
        encoded = encode_pairs(
            self.tokenizer, self.meta.shape, user_texts, item_texts, length, self.meta.item_max_len
        )
        return torch_inputs(encoded, device)


def keep_encoder_layers(encoder: PreTrainedModel, keep: list[int]) -> None:
    """Make ``encoder`` a shallower one of the listed layers, in order, renumbered from 0."""
    body: Any = encoder
    body.encoder.layer = nn.ModuleList([body.encoder.layer[i] for i in keep])
    body.config.num_hidden_layers = len(keep)
    for new_index, layer in enumerate(body.encoder.layer):
        layer.attention.self.layer_idx = new_index


def new_ranker(max_len: int = 64, layers: int | None = None, shape: str = "cross") -> Checkpoint:
    """A fresh ranker on the bundled base encoder (eager attention, so it exports to ONNX).

    ``layers`` keeps only the base's first layers: a shallower ranker trains and serves in a
    fraction of the time, for the price of quality (the engine's quality gate shows how much).
    """
    from transformers.utils import logging as hf_logging

    path = base_model_path()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the unused pooler weights are expected
    try:
        encoder = AutoModel.from_pretrained(path, attn_implementation="eager", add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    if layers is not None:
        available = int(encoder.config.num_hidden_layers)
        if not 1 <= layers <= available:
            raise ValueError(
                f"layers must be between 1 and {available} (the base encoder's depth), got {layers}"
            )
        keep_encoder_layers(encoder, list(range(layers)))
    tokenizer = AutoTokenizer.from_pretrained(path)
    # A short prefix budget is split evenly; 128 gives the item its usual 32.
    meta = CheckpointMeta(max_len=max_len, shape=shape, item_max_len=min(DEFAULT_ITEM_MAX_LEN, max_len // 2))
    return Checkpoint(ranker_class(shape)(encoder), tokenizer, meta)


def save_checkpoint(checkpoint: Checkpoint, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint.model.encoder.save_pretrained(directory)
    checkpoint.tokenizer.save_pretrained(directory)
    head = {k: v.detach().contiguous() for k, v in checkpoint.model.head.state_dict().items()}
    save_file(head, str(directory / HEAD_FILE))
    (directory / META_FILE).write_text(json.dumps(asdict(checkpoint.meta), indent=2, sort_keys=True))
    return directory


def _read_meta(directory: Path) -> CheckpointMeta:
    path = directory / META_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {META_FILE}: not a recserve checkpoint")
    try:
        raw = json.loads(path.read_text())
        meta = CheckpointMeta(**raw)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint {directory}: {META_FILE} is corrupt ({error})") from None
    if meta.shape not in SHAPES:
        raise CheckpointError(
            f"checkpoint {directory}: {META_FILE} names model shape {meta.shape!r}; this build knows "
            + ", ".join(SHAPES)
        )
    if meta.format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {directory}: format version {meta.format_version}, this build reads {FORMAT_VERSION}"
        )
    return meta


def _require(directory: Path, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {directory}: {what} file(s) missing: {', '.join(missing)}")


def _load_encoder(directory: Path, meta: CheckpointMeta) -> PreTrainedModel:
    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is corrupt ({error})") from None
    encoder: PreTrainedModel = AutoModel.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation="eager", add_pooling_layer=False
    )
    try:
        reshape_encoder(encoder, meta.heads_per_layer, meta.ffn_per_layer)
    except (IndexError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {directory}: {META_FILE} describes an impossible pruning ({error})"
        ) from None
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} is corrupt ({error})") from None
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(
            f"checkpoint {directory}: {WEIGHTS_FILE} lacks {len(missing)} tensors (first: {missing[0]})"
        )
    for name, tensor in own.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint {directory}: tensor {name} has shape {tuple(state[name].shape)}, "
                f"the config expects {tuple(tensor.shape)}"
            )
    encoder.load_state_dict({k: state[k] for k in own}, strict=True)
    encoder.eval()  # type: ignore[no-untyped-call]
    return encoder


def _load_head(directory: Path, hidden: int) -> nn.Linear:
    try:
        state = load_file(str(directory / HEAD_FILE))
        head = nn.Linear(hidden, 1)
        head.load_state_dict(state)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {directory}: {HEAD_FILE} is corrupt ({error})") from None
    return head


def load_checkpoint(directory: Path) -> Checkpoint:
    """Open a checkpoint directory, naming the exact file that is missing or corrupt."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    meta = _read_meta(directory)
    _require(directory, (CONFIG_FILE, WEIGHTS_FILE, HEAD_FILE), "model")
    tokenizer = load_tokenizer(directory)
    encoder = _load_encoder(directory, meta)
    head = _load_head(directory, encoder.config.hidden_size)
    return Checkpoint(ranker_class(meta.shape)(encoder, head).eval(), tokenizer, meta)


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", *PREFIX_INPUTS)


def torch_inputs(encoded: dict[str, Any], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The encoded arrays the model takes, as tensors (tokenizers add keys it does not take)."""
    return {k: torch.as_tensor(encoded[k], device=device) for k in MODEL_INPUTS if k in encoded}


@torch.inference_mode()
def score_pairs(checkpoint: Checkpoint, user_texts: list[str], item_texts: list[str]) -> np.ndarray:
    """Eager fp32 scores: the reference every optimized engine is gated against."""
    model = checkpoint.model.eval()
    scores: torch.Tensor = model(**checkpoint.encode(user_texts, item_texts))
    return scores.float().numpy()
