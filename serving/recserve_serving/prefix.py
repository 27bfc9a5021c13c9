"""The shared-prefix ranker: the user is encoded once per request, each candidate cheaply.

A cross-encoder reads ``[CLS] user [SEP] item [SEP]`` with full attention, so the user's
tokens depend on the candidate and a request of 200 candidates re-encodes the same history
200 times. Here the attention mask is one-directional across the boundary: user tokens attend
only to user tokens, item tokens attend to the user's tokens and their own. The user's keys and
values at every layer are then the same for every candidate, so they are computed once, and a
candidate costs a pass over its own ~16 tokens that reads them. The model is trained with this
mask, so the cached form is not an approximation: it is the same function as the full sequence
under the mask (``full_sequence_scores``, which the tests compare it with).

The layer arithmetic is BERT's own (post-LayerNorm, GELU), written out over the HF layer's
modules because HF's layer takes one sequence with one mask and cannot take another
sequence's keys. Pruned heads and FFN neurons, and dropped layers, work unchanged: the
shapes come from the modules.

Layout: ``user_ids`` [U, Lu] (``[CLS] user [SEP]``), ``item_ids`` [U, C, Li] (``item [SEP]``,
C candidates per user, padded slots all-mask-zero), ``pair_slots`` [N]: pair n's flat index
into the [U, C] scores. Item positions continue after each user's own length, as in the pair
encoding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PREFIX_INPUTS = ("user_ids", "user_mask", "item_ids", "item_mask", "pair_slots")


def _bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An additive attention bias: 0 where attended, the dtype's minimum where not."""
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min


def _heads(linear: nn.Module, hidden: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., L, hidden] -> [..., L, heads, head size]; callers permute with explicit,
    non-negative dims (the ONNX exporter writes negative ones into Transpose, which is invalid)."""
    projected: torch.Tensor = linear(hidden)
    return projected.view(*projected.shape[:-1], heads, -1)


def _finish(layer: Any, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Attention output projection, residual + LayerNorm, then the FFN block: BERT after attention."""
    attention = layer.attention.output
    attended = attention.LayerNorm(attention.dropout(attention.dense(context)) + hidden)
    inner = layer.intermediate(attended)
    out: torch.Tensor = layer.output.LayerNorm(layer.output.dropout(layer.output.dense(inner)) + attended)
    return out


def _probs_dropout(layer: Any, probs: torch.Tensor) -> torch.Tensor:
    dropped: torch.Tensor = layer.attention.self.dropout(probs)
    return dropped


def user_layer(
    layer: Any, hidden: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer over the users' tokens alone; returns the next hidden states and this layer's
    keys and values [U, H, Lu, D], which every candidate of the user reads."""
    attention = layer.attention.self
    heads = int(attention.num_attention_heads)
    query, key, value = (
        _heads(linear, hidden, heads).permute(0, 2, 1, 3)  # [U, H, Lu, D]
        for linear in (attention.query, attention.key, attention.value)
    )
    scores = query @ key.transpose(2, 3) * attention.scaling + bias
    context = _probs_dropout(layer, scores.softmax(-1)) @ value
    merged = context.permute(0, 2, 1, 3).flatten(2)
    return _finish(layer, hidden, merged), key, value


def item_layer(
    layer: Any,
    hidden: torch.Tensor,
    user_key: torch.Tensor,
    user_value: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """One layer over the candidates' tokens [U, C, Li, hidden], attending to their user's
    cached keys/values and to their own tokens (never to other candidates'). ``bias`` [U, 1, C,
    1, Lu + Li] masks both parts at once, built once for all layers."""
    attention = layer.attention.self
    heads = int(attention.num_attention_heads)
    users, candidates, length = hidden.shape[:3]
    query, key, value = (
        _heads(linear, hidden, heads).permute(0, 3, 1, 2, 4)  # [U, H, C, Li, D]
        for linear in (attention.query, attention.key, attention.value)
    )
    query = query * attention.scaling  # on the queries, not on the larger score tensor
    size = query.shape[-1]
    # Every candidate token of a user against the user's keys: one [C*Li, D] x [D, Lu] product
    # per user and head, with no copy of the user's keys per candidate.
    flat_query = query.reshape(users, heads, candidates * length, size)
    to_user = (flat_query @ user_key.transpose(2, 3)).view(users, heads, candidates, length, -1)
    to_self = query @ key.transpose(3, 4)
    scores = torch.cat([to_user, to_self], dim=-1) + bias
    probs = _probs_dropout(layer, scores.softmax(-1))
    user_len = user_key.shape[-2]
    from_user = probs[..., :user_len].reshape(users, heads, candidates * length, user_len) @ user_value
    context = from_user.view(users, heads, candidates, length, size) + probs[..., user_len:] @ value
    merged = context.permute(0, 2, 3, 1, 4).flatten(3)  # [U, C, Li, H*D]
    return _finish(layer, hidden, merged)


UserStates = list[torch.Tensor]
"""Per layer, the user's keys then values, each [U, H, Lu, D]: everything a candidate reads."""


def user_states(encoder: Any, user_ids: torch.Tensor, user_mask: torch.Tensor) -> UserStates:
    """Each user once through every layer; what the candidates of any chunk read after."""
    positions = torch.arange(user_ids.shape[1], device=user_ids.device).expand_as(user_ids)
    hidden = encoder.embeddings(
        input_ids=user_ids, token_type_ids=torch.zeros_like(user_ids), position_ids=positions
    )
    bias = _bias(user_mask, hidden.dtype)[:, None, None, :]  # [U, 1, 1, Lu]
    states: UserStates = []
    for layer in encoder.encoder.layer:
        hidden, key, value = user_layer(layer, hidden, bias)
        states += [key, value]
    return states


def candidate_scores(
    encoder: Any,
    head: nn.Module,
    user_mask: torch.Tensor,
    item_ids: torch.Tensor,
    item_mask: torch.Tensor,
    pair_slots: torch.Tensor,
    states: UserStates,
) -> torch.Tensor:
    """One score per pair from the users' cached states: only the candidates' tokens are computed."""
    users, candidates, length = item_ids.shape
    # Item positions continue after each user's own (unpadded) length, as in the pair encoding.
    offsets = user_mask.sum(1, keepdim=True)  # [U, 1]
    item_positions = offsets[:, None, :] + torch.arange(length, device=item_ids.device)  # [U, 1, Li]
    hidden = encoder.embeddings(
        input_ids=item_ids.reshape(users * candidates, length),
        token_type_ids=torch.ones_like(item_ids).reshape(users * candidates, length),
        position_ids=item_positions.expand(users, candidates, length).reshape(users * candidates, length),
    ).view(users, candidates, length, -1)
    dtype = hidden.dtype
    user_bias = _bias(user_mask, dtype)[:, None, None, None, :].expand(users, 1, candidates, 1, -1)
    item_bias = _bias(item_mask, dtype)[:, None, :, None, :]  # [U, 1, C, 1, Li]
    pair_bias = torch.cat([user_bias, item_bias], dim=-1)
    for index, layer in enumerate(encoder.encoder.layer):
        hidden = item_layer(layer, hidden, states[2 * index], states[2 * index + 1], pair_bias)
    weights = item_mask.unsqueeze(-1).to(dtype)
    pooled = (hidden * weights).sum(2) / weights.sum(2).clamp(min=1.0)  # [U, C, hidden]
    scores: torch.Tensor = head(pooled).reshape(-1)
    return scores.index_select(0, pair_slots)


def prefix_scores(
    encoder: Any,
    head: nn.Module,
    user_ids: torch.Tensor,
    user_mask: torch.Tensor,
    item_ids: torch.Tensor,
    item_mask: torch.Tensor,
    pair_slots: torch.Tensor,
) -> torch.Tensor:
    """One score per pair: each user once through every layer, then all candidates together."""
    states = user_states(encoder, user_ids, user_mask)
    return candidate_scores(encoder, head, user_mask, item_ids, item_mask, pair_slots, states)


class UserGraph(nn.Module):
    """The user pass as its own module, for export: token ids -> per-layer keys and values."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, user_ids: torch.Tensor, user_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(user_states(self.encoder, user_ids, user_mask))


class CandidateGraph(nn.Module):
    """The candidate pass as its own module, for export: states + candidates -> scores."""

    def __init__(self, encoder: Any, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(
        self,
        user_mask: torch.Tensor,
        item_ids: torch.Tensor,
        item_mask: torch.Tensor,
        pair_slots: torch.Tensor,
        *states: torch.Tensor,
    ) -> torch.Tensor:
        return candidate_scores(
            self.encoder, self.head, user_mask, item_ids, item_mask, pair_slots, list(states)
        )


def state_names(layers: int) -> list[str]:
    """The exported graphs' names for the users' states, in ``user_states`` order."""
    return [f"{kind}_{layer}" for layer in range(layers) for kind in ("key", "value")]


def full_sequence_scores(
    encoder: Any,
    head: nn.Module,
    user_ids: torch.Tensor,
    user_mask: torch.Tensor,
    item_ids: torch.Tensor,
    item_mask: torch.Tensor,
    pair_slots: torch.Tensor,
) -> torch.Tensor:
    """The uncached form: each pair as one ``[CLS] user [SEP] item [SEP]`` sequence under the
    prefix mask, every pair re-reading its user. What ``prefix_scores`` must equal."""
    candidates = item_ids.shape[1]
    out = []
    for slot in pair_slots.tolist():
        u, c = divmod(int(slot), candidates)
        user_len = int(user_mask[u].sum())
        item_len = int(item_mask[u, c].sum())
        ids = torch.cat([user_ids[u, :user_len], item_ids[u, c, :item_len]])[None]
        types = torch.cat([torch.zeros(user_len), torch.ones(item_len)]).long()[None]
        total = user_len + item_len
        allowed = torch.ones(total, total, dtype=torch.bool)
        allowed[:user_len, user_len:] = False  # the user never sees the candidate
        hidden = encoder.embeddings(
            input_ids=ids, token_type_ids=types, position_ids=torch.arange(total)[None]
        )
        bias = _bias(allowed, hidden.dtype)[None, None]
        for layer in encoder.encoder.layer:
            hidden, _, _ = user_layer(layer, hidden, bias)
        out.append(head(hidden[0, user_len:].mean(0)).reshape(()))
    return torch.stack(out)
