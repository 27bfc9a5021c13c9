"""Differentially private fine-tuning (DP-SGD, opacus) of a prefix-shaped ranker.

The privacy unit is one training example: a positive (a user's like, with the text of their
likes before it) and its sampled negatives, as one row of the prefix layout (the user once,
their four candidates beside it). The listwise loss then mixes scores only within one example,
so per-example clipping bounds each example's whole influence: that is what DP-SGD needs, and
why this keeps the listwise loss instead of a per-pair binary cross-entropy. It is not user-level
privacy: a user with k examples has roughly k times the epsilon (group privacy), and the user
text repeats their earlier likes in every example.

Each distinct positive is one example (never repeated in the data set; Poisson sampling decides
how often it is seen), and the accountant (RDP) reports the epsilon actually spent for the steps
taken at the noise ``make_private_with_epsilon`` chose for the target. Opacus's hooks compute
per-example gradients of the trainable Linear and LayerNorm modules; the embeddings and lower
layers stay frozen (``freeze_lower``), so their gradients are never needed. In the prefix path
each Linear runs twice per forward (user pass, candidate pass), both with the example as their
first dimension, and opacus adds the two per-example gradients. A cross-shaped ranker has no
such layout (its rows are pairs, not examples) and is refused.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recserve_serving.data import Pair
from recserve_serving.errors import InvalidRequest
from recserve_serving.model import Checkpoint
from recserve_serving.tokens import item_tokens, layout_prefix, user_tokens
from recserve_serving.train import TrainingBudgetExceeded, listwise_loss, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrivateSettings:
    steps: int
    examples_per_step: int
    """The expected Poisson batch, in examples (a step's pairs divided by the group size)."""
    target_epsilon: float
    delta: float
    max_grad_norm: float
    lr: float = 5e-5
    head_lr: float = 5e-4
    seed: int = 0


@dataclass(frozen=True)
class PrivateResult:
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    examples: int
    seconds: float
    train_loss: float


class _Groups(nn.Module):
    """The prefix ranker with one row per example: scores [examples, candidates]."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        self.ranker = checkpoint.model

    def forward(
        self, user_ids: torch.Tensor, user_mask: torch.Tensor, item_ids: torch.Tensor, item_mask: torch.Tensor
    ) -> torch.Tensor:
        users, candidates = item_ids.shape[:2]
        slots = torch.arange(users * candidates, device=item_ids.device)
        scores: torch.Tensor = self.ranker(user_ids, user_mask, item_ids, item_mask, slots)
        return scores.view(users, candidates)


def _tensors(checkpoint: Checkpoint, pairs: list[Pair], group: int) -> tuple[torch.Tensor, ...]:
    """Every example as one row: its user text once, its ``group`` candidates, and their labels."""
    meta = checkpoint.meta
    examples = len(pairs) // group
    users = user_tokens(
        checkpoint.tokenizer,
        [pairs[e * group].user_text for e in range(examples)],
        meta.max_len - meta.item_max_len,
    )
    rows = [e for e in range(examples) for _ in range(group)]
    items = item_tokens(
        checkpoint.tokenizer, [p.item_text for p in pairs[: examples * group]], meta.item_max_len
    )
    laid = layout_prefix(users, rows, items, int(checkpoint.tokenizer.pad_token_id or 0))
    labels = torch.tensor([p.label for p in pairs[: examples * group]], dtype=torch.float32).view(
        examples, group
    )
    arrays = [torch.as_tensor(laid[k]) for k in ("user_ids", "user_mask", "item_ids", "item_mask")]
    return (*arrays, labels)


def fit_private(
    checkpoint: Checkpoint,
    pairs: list[Pair],
    settings: PrivateSettings,
    *,
    group: int = 4,
    deadline: float | None = None,
) -> PrivateResult:
    """DP-SGD over the examples in ``pairs`` (consecutive groups of ``group``, the positive first)."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    if checkpoint.meta.shape != "prefix":
        raise InvalidRequest(
            f"DP-SGD retraining needs a prefix-shaped ranker (one example per row); this checkpoint is "
            f"{checkpoint.meta.shape!r}: unset spec.training.privacy.dpEpsilon or train with --shape prefix"
        )
    torch.set_num_threads(2)
    seed_everything(settings.seed)
    tensors = _tensors(checkpoint, pairs, group)
    examples = int(tensors[0].shape[0])
    if examples < 2:
        raise InvalidRequest(f"DP-SGD needs at least 2 distinct examples, got {examples}")
    batch = max(1, min(settings.examples_per_step, examples))
    loader = DataLoader(TensorDataset(*tensors), batch_size=batch, shuffle=False)
    module = _Groups(checkpoint).train()
    head = list(checkpoint.model.head.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in module.parameters() if p.requires_grad and id(p) not in head_ids]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": settings.lr}, {"params": head, "lr": settings.head_lr}], weight_decay=0.0
    )
    sample_rate = batch / examples
    epochs = settings.steps * sample_rate
    with warnings.catch_warnings():
        # opacus warns that secure_mode is off (its noise is not cryptographically sampled).
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
        private, optimizer, loader = engine.make_private_with_epsilon(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=settings.target_epsilon,
            target_delta=settings.delta,
            epochs=epochs,  # a fraction of an epoch is fine: opacus only multiplies it
            max_grad_norm=settings.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode="hooks",
        )
    criterion = listwise_loss(group)
    noise = float(optimizer.noise_multiplier)
    started = time.perf_counter()
    losses: list[float] = []
    steps = 0
    try:
        with warnings.catch_warnings():
            # The frozen embeddings make torch say a backward hook fires on outputs only: expected.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            while steps < settings.steps:
                for user_ids, user_mask, item_ids, item_mask, labels in loader:
                    if steps >= settings.steps:
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        raise TrainingBudgetExceeded(
                            f"DP training stopped after {steps} of {settings.steps} steps: the time budget ran "
                            "out; raise spec.training.budget.maxMinutes or lower budget.steps"
                        )
                    steps += 1
                    optimizer.zero_grad(set_to_none=True)
                    if user_ids.shape[0] == 0:
                        # An empty Poisson batch releases nothing, but count the step so the reported
                        # epsilon never undercounts what the sampling spent.
                        engine.accountant.step(noise_multiplier=noise, sample_rate=sample_rate)
                        continue
                    scores = private(user_ids, user_mask, item_ids, item_mask)
                    loss = criterion(scores.reshape(-1), labels.reshape(-1))
                    loss.backward()  # type: ignore[no-untyped-call]
                    optimizer.step()
                    losses.append(float(loss.detach()))
    finally:
        _close(private)
        checkpoint.model.eval()
    epsilon = float(engine.get_epsilon(settings.delta))
    tail = losses[-max(1, len(losses) // 5) :]
    log.info("DP-SGD: %d steps, noise %.3f, epsilon %.3f at delta %g", steps, noise, epsilon, settings.delta)
    return PrivateResult(
        epsilon=epsilon,
        delta=settings.delta,
        noise_multiplier=noise,
        sample_rate=sample_rate,
        steps=steps,
        examples=examples,
        seconds=time.perf_counter() - started,
        train_loss=float(np.mean(tail)) if tail else math.nan,
    )


def _close(private: Any) -> None:
    """Remove opacus's hooks from the ranker's modules, so later scoring runs it unwrapped."""
    private._close()
