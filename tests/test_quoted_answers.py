"""How the quoted-answers benchmark chooses its gate on the calibration half."""

from __future__ import annotations

from collections import Counter

from benchmarks.quoted_answers import chosen_gate, gate_value

THRESHOLDS = (0.40, 0.45, 0.50, 0.55)
WEIGHTS = (0.0, 0.2, 0.4)


def _table(values: dict[tuple[float, float], int], default: int) -> dict[tuple[int, float, float], Counter]:
    """A grid of outcomes whose gate value (right minus twice invented) is `values` where given, else `default`."""
    return {(3, t, w): Counter(correct=values.get((t, w), default), invented=0) for t in THRESHOLDS for w in WEIGHTS}


def test_an_invented_answer_costs_twice_a_right_one():
    assert gate_value(Counter(correct=50, invented=6, wrong_fact=9)) == 38


def test_a_broad_good_region_wins_over_a_lone_peak():
    # One cell one point above everything, its neighbours poor; a plateau of good cells elsewhere.
    values = {(0.55, 0.0): 42, (0.50, 0.0): 30, (0.55, 0.2): 30, (0.50, 0.2): 30}
    values |= {(t, w): 41 for t in (0.40, 0.45) for w in WEIGHTS}
    assert chosen_gate(_table(values, default=35))[1] in (0.40, 0.45)  # inside the plateau, not the peak at 0.55


def test_ties_go_to_the_stricter_threshold_then_to_the_smaller_weight():
    assert chosen_gate(_table({}, default=40)) == (3, 0.55, 0.0)
