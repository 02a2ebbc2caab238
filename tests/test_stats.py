"""Statistics of Monte Carlo accuracies (neft_jax.stats)."""

import math

import numpy as np
import pytest

from neft_jax import paired_summary, summarize
from neft_jax.stats import across_seeds, count_not_converged, summarize_over_seeds


def test_summary_statistics():
    acc = [0.90, 0.92, 0.94, 0.96]
    summary = summarize(acc, ekl=0.25)
    std = np.std(acc, ddof=1)
    assert summary["mean"] == pytest.approx(0.93)
    assert summary["std"] == pytest.approx(std)
    assert summary["ci95"] == pytest.approx(1.96 * std / 2)
    assert summary["ci99"] == pytest.approx(2.576 * std / 2)
    assert summary["runs"] == 4 and summary["ekl"] == 0.25
    single = summarize([0.5])
    assert single["std"] is None and single["ci95"] is None and single["ci99"] is None


def test_count_not_converged():
    assert count_not_converged([0.9, 0.91, 0.89] * 3 + [0.5]) == 1
    assert count_not_converged([0.9, 0.9, math.nan]) == 1
    assert count_not_converged([0.9] * 10) == 0
    # Exactly 5 points from the mean converges, on either side (in fractions or percent).
    assert count_not_converged([0.9, 1.0]) == 0 and count_not_converged([90.0, 100.0], 5) == 0
    assert summarize_over_seeds([90.0, 100.0], [None, None])[1] == 0
    assert summarize_over_seeds([90.0, 100.1], [None, None])[1] == 2


def test_summarize_over_seeds_counts_far_and_diverged_runs():
    summary, not_converged = summarize_over_seeds([90.0, 91.0, 92.0, float("nan")],
                                                  [0.1, 0.3, None, None])
    assert summary["mean"] == pytest.approx(91.0) and summary["runs"] == 3
    assert summary["ekl"] == pytest.approx(0.2)
    assert not_converged == 1
    # Three trainings: the Student-t quantile with 2 degrees of freedom, not the normal 1.96.
    assert summary["ci95"] == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert summary["ci99"] == pytest.approx(9.924843 * 1.0 / math.sqrt(3), rel=1e-6)
    _, far = summarize_over_seeds([90.0, 91.0, 80.0], [None] * 3)
    assert far == 1  # 80 is 7 points from the mean 87; 90 and 91 are within 5
    none, all_diverged = summarize_over_seeds([float("nan")] * 2, [None] * 2)
    assert none is None and all_diverged == 2


def test_paired_summary_is_the_summary_of_run_by_run_differences():
    a, b = [0.9, 0.8, 0.7], [0.85, 0.8, 0.6]
    assert paired_summary(a, b) == summarize(np.subtract(a, b))
    assert paired_summary(a, b[:2]) is None and paired_summary([0.5], [0.4]) is None


def test_across_seeds_is_the_mean_with_a_student_t_interval():
    # three seeds: t(0.975, 2) = 4.3027, std (ddof 1) of (1, 2, 3) = 1
    mean, half = across_seeds([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    # wider than the normal interval for few seeds, close to it for many
    assert half > 1.96 / np.sqrt(3)
    many = np.random.default_rng(0).normal(size=400)
    assert across_seeds(many)[1] == pytest.approx(1.966 * many.std(ddof=1) / 20, rel=2e-3)
    assert across_seeds([0.7]) == (0.7, None)
    with pytest.raises(ValueError):
        across_seeds([])
