"""Occlusion: how much each liked item raised an item's score, measured on the served engine.

A history item's contribution to an item's score is the drop of that score when the user's
text is rebuilt without it: ``score(history) - score(history without it)``. It needs nothing
but the engine's ``score``, so it explains ONNX Runtime, torch and TensorRT engines alike, and
it explains the engine that ranked (INT8 included), not a proxy model beside it.

One ``Occlusion`` is one engine call: for each explained item, its pair with the full user
text followed by one pair per distinct user text with one history item left out. The full
pair is scored again in that call rather than taken from the ranking call, so that every
contribution is the difference of two scores from one call: dynamic INT8 quantization scales
activations per batch, so a pair scored in two differently composed batches gets slightly
different scores, and that noise would otherwise be read as a contribution. A history item
whose leaving-out does not change the user's text (the text reads only the most recent
titles) contributes exactly 0 and costs no pair.

Pure: no catalog, no Ray. Texts are built by the caller's ``text_without``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_REASONS = 3
NO_REASON = "No single item you liked raised this score on its own"


@dataclass(frozen=True)
class Occlusion:
    """The pairs of one explanation call and how to read contributions back from their scores."""

    user_text: str
    item_texts: tuple[str, ...]
    considered: tuple[int, ...]
    """History item ids that can be reasons, most recent first: the contribution columns."""
    columns: tuple[int | None, ...]
    """Per considered item, the index of its left-out text in ``texts``; None when leaving it
    out leaves the user's text unchanged."""
    texts: tuple[str, ...]
    """Distinct user texts with one history item left out."""

    @property
    def width(self) -> int:
        """Pairs per explained item: the full text and each left-out text."""
        return 1 + len(self.texts)

    def pairs(self) -> tuple[list[str], list[str]]:
        """(user texts, item texts) of the call, item by item."""
        users: list[str] = []
        items: list[str] = []
        for item in self.item_texts:
            users += [self.user_text, *self.texts]
            items += [item] * self.width
        return users, items

    def _blocks(self, scores: Sequence[float]) -> list[Sequence[float]]:
        expected = self.width * len(self.item_texts)
        if len(scores) != expected:
            raise ValueError(f"{len(scores)} scores for an occlusion of {expected} pairs")
        return [scores[i * self.width : (i + 1) * self.width] for i in range(len(self.item_texts))]

    def full_scores(self, scores: Sequence[float]) -> list[float]:
        """Each item's score with the whole history, from the call's own scores."""
        return [float(block[0]) for block in self._blocks(scores)]

    def contributions(self, scores: Sequence[float]) -> list[list[float]]:
        """Per item, per considered history item: the score's drop when that item is left out."""
        return [
            [0.0 if column is None else float(block[0] - block[1 + column]) for column in self.columns]
            for block in self._blocks(scores)
        ]


def plan_occlusion(
    user_text: str,
    history: Sequence[int],
    item_texts: Sequence[str],
    text_without: Callable[[int], str],
    max_history: int,
) -> Occlusion:
    """The occlusion of ``item_texts`` for a user whose text is ``user_text``.

    ``history`` is the liked item ids the text was built from, oldest first; the
    ``max_history`` most recent distinct ones can be reasons. ``text_without(item_id)`` is the
    user's text with every occurrence of that item left out of the history.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be at least 1, got {max_history}")
    considered = tuple(dict.fromkeys(reversed(history)))[:max_history]
    texts: dict[str, int] = {}
    columns: list[int | None] = []
    for item_id in considered:
        text = text_without(item_id)
        columns.append(None if text == user_text else texts.setdefault(text, len(texts)))
    return Occlusion(user_text, tuple(item_texts), considered, tuple(columns), tuple(texts))


def top_reasons(
    considered: Sequence[int], contributions: Sequence[float], limit: int = MAX_REASONS
) -> list[tuple[int, float]]:
    """The (item id, contribution) of up to ``limit`` items that raised the score, largest first.

    Only positive contributions are reasons: a item whose leaving-out does not lower the score
    did not make the item rank where it did. Ties keep the more recent item first.
    """
    if len(considered) != len(contributions):
        raise ValueError(f"{len(contributions)} contributions for {len(considered)} history items")
    raised = [(m, c) for m, c in zip(considered, contributions, strict=True) if c > 0.0]
    return sorted(raised, key=lambda reason: -reason[1])[:limit]


def because(titles: Sequence[str]) -> str:
    """The reasons in one line: "Because you liked A, B and C"."""
    if not titles:
        return NO_REASON
    if len(titles) == 1:
        return f"Because you liked {titles[0]}"
    return f"Because you liked {', '.join(titles[:-1])} and {titles[-1]}"
