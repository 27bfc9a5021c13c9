"""Occlusion planning and reading, reasons and their sentence: pure, on made-up texts and scores."""

from __future__ import annotations

import pytest

from recserve_serving.serve.occlusion import NO_REASON, because, plan_occlusion, top_reasons

pytestmark = pytest.mark.unit


def text_of(history: list[int], reads: int = 3) -> str:
    """A user text that, like the real one, reads only the most recent few likes."""
    return "likes " + " ".join(map(str, history[-reads:]))


def occlusion_of(history: list[int], items: list[str], max_history: int = 10, reads: int = 3):
    return plan_occlusion(
        text_of(history, reads),
        history,
        items,
        lambda left_out: text_of([m for m in history if m != left_out], reads),
        max_history,
    )


def test_the_most_recent_distinct_likes_are_considered_up_to_max_history():
    occlusion = occlusion_of([1, 2, 3, 2, 4], ["a"], max_history=3)
    assert occlusion.considered == (4, 2, 3)


def test_a_like_the_text_does_not_read_costs_no_pair_and_contributes_exactly_zero():
    history = [1, 2, 3, 4, 5]  # the text reads 3, 4, 5
    occlusion = occlusion_of(history, ["a", "b"])
    assert occlusion.considered == (5, 4, 3, 2, 1)
    assert occlusion.columns[3:] == (None, None)
    assert len(occlusion.texts) == 3 and occlusion.width == 4
    users, items = occlusion.pairs()
    assert users[:4] == ["likes 3 4 5", "likes 2 3 4", "likes 2 3 5", "likes 2 4 5"]
    assert items == ["a"] * 4 + ["b"] * 4
    scores = [10.0, 7.0, 9.0, 10.5, 1.0, 1.0, 1.0, 0.0]
    assert occlusion.contributions(scores) == [[3.0, 1.0, -0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]]
    assert occlusion.full_scores(scores) == [10.0, 1.0]


def test_left_out_texts_that_coincide_are_scored_once():
    occlusion = plan_occlusion("full", [1, 2, 3], ["a"], lambda m: "same" if m != 3 else "other", 10)
    assert occlusion.texts == ("other", "same")
    assert occlusion.columns == (0, 1, 1)
    assert occlusion.contributions([5.0, 4.0, 2.0]) == [[1.0, 3.0, 3.0]]


def test_an_empty_history_still_scores_each_item_once():
    occlusion = occlusion_of([], ["a", "b"])
    assert occlusion.considered == () and occlusion.width == 1
    assert occlusion.pairs() == (["likes "] * 2, ["a", "b"])
    assert occlusion.contributions([1.0, 2.0]) == [[], []]


def test_scores_of_another_shape_are_refused():
    occlusion = occlusion_of([1, 2], ["a"])
    with pytest.raises(ValueError, match="2 scores for an occlusion of 3 pairs"):
        occlusion.contributions([1.0, 2.0])
    with pytest.raises(ValueError, match="max_history"):
        occlusion_of([1], ["a"], max_history=0)


def test_reasons_are_the_largest_positive_contributions_at_most_three():
    considered = [5, 4, 3, 2, 1]
    assert top_reasons(considered, [0.1, 0.0, 2.0, -1.0, 0.5]) == [(3, 2.0), (1, 0.5), (5, 0.1)]
    assert top_reasons(considered, [0.1, 0.3, 2.0, 0.4, 0.5]) == [(3, 2.0), (1, 0.5), (2, 0.4)]
    assert top_reasons(considered, [0.0, -0.2, 0.0, 0.0, 0.0]) == []
    assert top_reasons([9, 8], [1.0, 1.0]) == [(9, 1.0), (8, 1.0)]  # a tie keeps the more recent first
    with pytest.raises(ValueError):
        top_reasons([1, 2], [1.0])


def test_the_sentence_names_each_reason():
    assert because([]) == NO_REASON
    assert because(["Alien (1979)"]) == "Because you liked Alien (1979)"
    assert because(["Alien (1979)", "Blade Runner (1982)"]) == (
        "Because you liked Alien (1979) and Blade Runner (1982)"
    )
    assert because(["A", "B", "C"]) == "Because you liked A, B and C"
