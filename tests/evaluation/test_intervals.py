"""Paired bootstrap intervals: known observed differences, and intervals that do or do not exclude 0."""

from __future__ import annotations

import numpy as np
import pytest

from taxotrain.evaluation.intervals import paired_differences, unpaired_differences


def arrays(hits: np.ndarray, heights: np.ndarray) -> dict[str, np.ndarray]:
    return {"indices": np.arange(len(hits)), "class top1": hits.astype(float), "chain_accuracy": hits.astype(float),
            "heights": heights.astype(float)}


def test_identical_runs_differ_by_nothing() -> None:
    rng = np.random.default_rng(0)
    hits = rng.random(500) < 0.6
    a = arrays(hits, np.where(hits, 0, rng.integers(1, 4, 500)))
    d = paired_differences(a, a, resamples=200)
    assert all(v == (0.0, 0.0, 0.0) for v in d.values())


def test_a_clear_gain_excludes_zero_and_a_tiny_one_does_not() -> None:
    rng = np.random.default_rng(1)
    base_hits = rng.random(2000) < 0.6
    better = base_hits | (rng.random(2000) < 0.25)  # fixes about a quarter of the mistakes
    heights = np.where(base_hits, 0, 3)
    d = paired_differences(arrays(base_hits, heights), arrays(better, np.where(better, 0, 3)), resamples=500)
    obs, lo, hi = d["class top1"]
    assert obs == pytest.approx(better.mean() - base_hits.mean()) and 0 < lo < obs < hi
    assert d["mistake_severity"] == (0.0, 0.0, 0.0)  # every mistake is height 3 in both
    h_obs, h_lo, h_hi = d["hierarchical_distance_at_1"]
    assert h_obs == pytest.approx(3 * (better.mean() - base_hits.mean()) * -1) and h_hi < 0
    tiny = base_hits.copy()
    tiny[np.flatnonzero(~base_hits)[:2]] = True  # two records fixed out of 2,000
    _, lo, hi = paired_differences(arrays(base_hits, heights), arrays(tiny, np.where(tiny, 0, 3)))["class top1"]
    assert lo <= 0 < hi


def test_severity_ignores_unscored_records() -> None:
    hits = np.array([1, 0, 0, 1, 0])
    base = arrays(hits, np.array([0, 1, 1, 0, np.nan]))
    other = arrays(hits, np.array([0, 3, 1, 0, np.nan]))
    assert paired_differences(base, other, resamples=50)["mistake_severity"][0] == pytest.approx(1.0)


def test_different_records_are_refused() -> None:
    a = arrays(np.ones(5, bool), np.zeros(5))
    b = {**a, "indices": np.arange(1, 6)}
    with pytest.raises(ValueError, match="different test records"):
        paired_differences(a, b)


def test_seeds_that_disagree_widen_the_interval() -> None:
    rng = np.random.default_rng(2)
    hits = rng.random(2000) < 0.6
    heights = np.where(hits, 0, 2)
    lucky, unlucky = hits.copy(), hits.copy()
    lucky[np.flatnonzero(~hits)[:80]] = True  # one seed fixes 80 records, the other breaks 80
    unlucky[np.flatnonzero(hits)[:80]] = False
    seeds = [arrays(lucky, np.where(lucky, 0, 2)), arrays(unlucky, np.where(unlucky, 0, 2))]
    obs, lo, hi = paired_differences(arrays(hits, heights), seeds, resamples=1000)["class top1"]
    assert obs == pytest.approx(0.0)  # the setting's value is the mean of its seeds
    assert lo < -0.03 and hi > 0.03  # drawing the same seed twice is as likely as drawing both
    one = paired_differences(arrays(hits, heights), seeds[:1], resamples=1000)["class top1"]
    assert one == paired_differences(arrays(hits, heights), seeds[0], resamples=1000)["class top1"]
    assert one[1] > 0  # one lucky seed alone looks like a sure gain


def test_unpaired_intervals_cover_two_independent_test_sets() -> None:
    # the same model quality (60%) on two different test sets: no difference, and an interval wider than the
    # paired one of a real gain of the same size on one set
    rng = np.random.default_rng(3)
    a_hits, b_hits = rng.random(1500) < 0.6, rng.random(1000) < 0.6
    a = arrays(a_hits, np.where(a_hits, 0, 2))
    b = {**arrays(b_hits, np.where(b_hits, 0, 2)), "indices": np.arange(5000, 6000)}  # other records
    obs, lo, hi = unpaired_differences(a, b, resamples=1000)["class top1"]
    assert obs == pytest.approx(b_hits.mean() - a_hits.mean()) and lo < obs < hi and lo < 0 < hi
    # standard error of a difference of two independent proportions: the interval is about +-1.96 of it
    se = np.sqrt(0.24 / 1500 + 0.24 / 1000)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    better = b_hits | (rng.random(1000) < 0.5)  # a clearly better setting on its own test set
    _, lo, _ = unpaired_differences(a, {**b, "class top1": better.astype(float)}, resamples=500)["class top1"]
    assert lo > 0
    with pytest.raises(ValueError, match="one setting hold different test records"):
        unpaired_differences([a, {**a, "indices": np.arange(1, 1501)}], b)


def test_a_statistic_one_run_lacks_gets_no_interval_and_precision_at_1_is_resampled() -> None:
    rng = np.random.default_rng(3)
    hits = rng.random(400) < 0.5
    with_p1 = {**arrays(hits, np.where(hits, 0, 2)), "class precision_at_1": np.where(hits, 1.0, 0.0)}
    with_p1["class precision_at_1"][:10] = np.nan  # unscored queries drop out
    without = arrays(hits, np.where(hits, 0, 2))
    assert "class precision_at_1" not in paired_differences(with_p1, without, resamples=50)
    assert "class precision_at_1" not in unpaired_differences(without, with_p1, resamples=50)
    better = {**with_p1, "class precision_at_1": np.where(np.isnan(with_p1["class precision_at_1"]), np.nan, 1.0)}
    obs, lo, hi = paired_differences(with_p1, better, resamples=200)["class precision_at_1"]
    assert obs == pytest.approx(1 - np.nanmean(with_p1["class precision_at_1"])) and 0 < lo <= obs <= hi


def test_macro_f1_is_resampled_as_metrics_json_computes_it() -> None:
    from taxotrain.evaluation.intervals import statistics
    from taxotrain.evaluation.metrics import rank_scores

    rng = np.random.default_rng(3)
    labels = rng.choice(8, size=600, p=[0.4, 0.2, 0.15, 0.1, 0.08, 0.04, 0.02, 0.01])  # a long tail
    labels[:20] = -1  # unknown at the rank: neither scored nor counted
    probs = rng.random((600, 9))  # class 8 never a label, sometimes predicted: it counts, with F1 0
    probs[np.arange(600), np.where(labels >= 0, labels, 0)] += rng.random(600) * 1.5  # mostly right

    def run(p: np.ndarray) -> dict[str, np.ndarray]:
        hits = np.where(labels >= 0, (p.argmax(1) == labels).astype(float), np.nan)
        return {"indices": np.arange(600), "class top1": hits, "chain_accuracy": hits,
                "heights": np.where(hits == 1, 0.0, 2.0), "class predicted": p.argmax(1), "class label": labels}

    base, other = run(probs), run(probs + np.eye(9)[np.minimum(labels, 8)] * (labels >= 5)[:, None])  # rare fixed
    stat = statistics(base)["class macro_f1"]
    assert stat(np.arange(600)[None, :])[0] == pytest.approx(rank_scores(probs, labels)["macro_f1"])
    twice = np.concatenate([np.arange(600), np.arange(600)])[None, :]  # every record drawn twice: the same F1
    assert stat(twice)[0] == pytest.approx(stat(np.arange(600)[None, :])[0], abs=1e-6)
    obs, lo, hi = paired_differences(base, other, resamples=300)["class macro_f1"]
    want = rank_scores(probs + np.eye(9)[np.minimum(labels, 8)] * (labels >= 5)[:, None], labels)["macro_f1"]
    assert obs == pytest.approx(want - rank_scores(probs, labels)["macro_f1"]) and 0 < lo <= obs <= hi
