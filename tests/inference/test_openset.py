"""Open-set thresholds on hand-made cases with known answers, and the roll-up rule."""

from __future__ import annotations

import numpy as np
import pytest

from taxotrain.inference.openset import apply_thresholds, choose_threshold

# accepted at each threshold: 0.9 -> 1/1, 0.8 -> 2/2, 0.7 -> 2/3, 0.6 -> 3/4, 0.5 -> 3/5
SIMS = np.array([0.6, 0.9, 0.5, 0.8, 0.7])
RIGHT = np.array([True, True, False, True, False])


@pytest.mark.parametrize(("target", "threshold", "precision", "coverage"), [
    (0.75, 0.6, 0.75, 0.8),   # 0.7 dips to 2/3, but 0.6 is the smallest that reaches 0.75
    (0.7, 0.6, 0.75, 0.8),
    (0.6, 0.5, 0.6, 1.0),     # 3/5 reaches 0.6 exactly
    (0.9, 0.8, 1.0, 0.4),
])
def test_smallest_threshold_reaching_the_target(target: float, threshold: float, precision: float,
                                                coverage: float) -> None:
    choice = choose_threshold(SIMS, RIGHT, target)
    assert choice.reached
    assert (choice.threshold, choice.precision, choice.coverage) == pytest.approx((threshold, precision, coverage))


def test_tied_similarities_are_accepted_together() -> None:
    # 0.8 admits both tied records (1 of 2 right), so only 0.9 reaches 0.9
    choice = choose_threshold(np.array([0.9, 0.8, 0.8]), np.array([True, True, False]), 0.9)
    assert choice.threshold == pytest.approx(0.9) and choice.coverage == pytest.approx(1 / 3)


def test_unreachable_target_returns_the_most_precise_threshold_and_says_so() -> None:
    # precision 0 at 0.9, 1/2 at 0.8, 2/3 at 0.7
    choice = choose_threshold(np.array([0.9, 0.8, 0.7]), np.array([False, True, True]), 0.9)
    assert not choice.reached
    assert choice.threshold == pytest.approx(0.7) and choice.precision == pytest.approx(2 / 3)


def test_nan_similarities_are_never_accepted_and_no_records_accept_nothing() -> None:
    choice = choose_threshold(np.array([0.9, np.nan, 0.5]), np.array([True, False, False]), 0.9)
    assert choice.threshold == pytest.approx(0.9) and choice.coverage == pytest.approx(1 / 3)
    empty = choose_threshold(np.array([]), np.array([], dtype=bool), 0.9)
    assert empty.threshold == np.inf and not empty.reached and empty.precision is None


def test_roll_up_stops_at_the_first_rank_that_fails() -> None:
    sims = np.array([
        [0.9, 0.8, 0.7],     # every rank clears: the finest
        [0.9, 0.2, 0.7],     # the middle rank fails: the confident finest is not reported
        [0.1, 0.8, 0.7],     # the coarsest fails: unknown
        [0.9, 0.8, np.nan],  # no similarity at the finest: never accepted
        [0.5, 0.5, 0.6],     # exactly at the thresholds: accepted
    ])
    accepted, deepest = apply_thresholds(sims, [0.5, 0.5, 0.6])
    assert deepest.tolist() == [2, 0, -1, 1, 2]
    assert accepted.tolist() == [[True, True, True], [True, False, True], [False, True, True],
                                 [True, True, False], [True, True, True]]


def test_apply_thresholds_needs_one_threshold_per_rank() -> None:
    with pytest.raises(ValueError, match="2 thresholds"):
        apply_thresholds(np.zeros((4, 3)), [0.5, 0.5])
