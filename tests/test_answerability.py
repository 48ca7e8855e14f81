import math

import pytest

from colbert_att_assistant.assistant.answerability import (
    REFERENCE_SPREAD,
    SPREAD_DEPTH,
    score_spread,
    spread_adjusted,
)


def test_a_ranking_whose_best_passages_stand_out_has_a_wider_spread_than_a_flat_one():
    peaked = [20.0, 16.0, 12.0, 11.5, 11.2, 11.0, 10.9, 10.8, 10.7, 10.6]
    flat = [12.0, 11.9, 11.8, 11.8, 11.7, 11.6, 11.6, 11.5, 11.5, 11.4]
    assert score_spread(peaked) > score_spread(flat) > 0


def test_the_spread_is_the_same_whatever_the_scale_of_the_scores():
    scores = [9.0, 7.0, 6.5, 6.0, 5.0]
    # A longer question sums more token matches into every score; the spread does not grow with it.
    assert score_spread([3 * s for s in scores]) == pytest.approx(score_spread(scores))


def test_only_the_top_of_the_ranking_is_read():
    top = [10.0, 9.0, 8.0, 7.5, 7.0, 6.8, 6.6, 6.5, 6.4, 6.3]
    assert len(top) == SPREAD_DEPTH
    assert score_spread([*top, 0.1, 0.1, 0.1]) == score_spread(top)


@pytest.mark.parametrize("scores", [[], [5.0], [5.0, 4.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 0.5]])
def test_no_spread_is_read_from_too_few_or_unusable_scores(scores):
    assert score_spread(scores) is None


def test_the_evidence_score_is_moved_by_the_log_of_the_spread():
    assert spread_adjusted(0.5, REFERENCE_SPREAD, 0.4) == pytest.approx(0.5)  # a typical spread changes nothing
    assert spread_adjusted(0.5, 2 * REFERENCE_SPREAD, 0.4) == pytest.approx(0.5 + 0.4 * math.log(2))
    assert spread_adjusted(0.5, REFERENCE_SPREAD / 2, 0.4) == pytest.approx(0.5 - 0.4 * math.log(2))


def test_without_a_spread_or_a_weight_the_evidence_score_is_kept():
    assert spread_adjusted(0.61, None, 0.4) == 0.61
    assert spread_adjusted(0.61, 0.01, 0.0) == 0.61
    assert math.isfinite(spread_adjusted(0.61, 0.0, 0.4))  # a zero spread lowers the score, never to -inf
