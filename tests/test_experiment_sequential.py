"""The always-valid test behind the A/B analysis, on simulated experiments checked every day.

Each simulation draws daily conversions (0/1 outcomes) for a control and a challenger, then
checks every experiment once a day on all the data so far, as a daily pipeline run would: a
look that decides ends the experiment. Vectorised over experiments and days, so thousands of
experiments take well under a second.
"""

import numpy as np
import pytest

from ctloop.components.experiment.sequential import always_valid_interval, summarize

EXPERIMENTS = 2000
DAYS = 30
ROWS_PER_DAY = 300  # labelled rows per variant per day
ALPHA = 0.05
MIXING_VARIANCE = 0.002
# A rate estimated from EXPERIMENTS independent experiments has a standard error of at most
# sqrt(0.05 * 0.95 / 2000) = 0.0049 near ALPHA: three of them is the margin.
MARGIN = 3 * np.sqrt(ALPHA * (1 - ALPHA) / EXPERIMENTS)


def daily_looks(rng, control_rate: float, challenger_rate: float):
    """Per experiment and day: rows, mean and sample variance of each variant so far."""
    rows = np.broadcast_to(ROWS_PER_DAY * np.arange(1, DAYS + 1), (EXPERIMENTS, DAYS))
    looks = []
    for rate in (control_rate, challenger_rate):
        successes = rng.binomial(ROWS_PER_DAY, rate, size=(EXPERIMENTS, DAYS)).cumsum(axis=1)
        mean = successes / rows
        looks.append((rows, mean, mean * (1 - mean) * rows / (rows - 1)))
    return looks


def decided_at_some_look(control, challenger) -> np.ndarray:
    interval = always_valid_interval(
        *control, *challenger, alpha=ALPHA, mixing_variance=MIXING_VARIANCE
    )
    excludes_zero = (interval.lower > 0) | (interval.upper < 0)
    assert np.array_equal(excludes_zero, interval.p_value <= ALPHA)
    return excludes_zero.any(axis=1)


def naive_z_test_decided(control, challenger) -> np.ndarray:
    """A fixed-horizon two-sided z-test at ALPHA, misused: looked at every day."""
    (n0, m0, v0), (n1, m1, v1) = control, challenger
    z = (m1 - m0) / np.sqrt(v0 / n0 + v1 / n1)
    return (np.abs(z) > 1.959963984540054).any(axis=1)


def test_daily_checks_of_equal_variants_declare_a_winner_at_most_alpha_of_the_time():
    control, challenger = daily_looks(np.random.default_rng(20261204), 0.10, 0.10)
    false_winner_rate = decided_at_some_look(control, challenger).mean()
    print(f"mSPRT false-winner rate over {DAYS} daily looks: {false_winner_rate:.4f}")
    assert false_winner_rate <= ALPHA + MARGIN


def test_a_fixed_horizon_test_checked_daily_declares_false_winners_far_above_alpha():
    control, challenger = daily_looks(np.random.default_rng(20261204), 0.10, 0.10)
    last_look_only = naive_z_test_decided(
        *(tuple(figure[:, -1:] for figure in side) for side in (control, challenger))
    ).mean()
    every_look = naive_z_test_decided(control, challenger).mean()
    print(f"z-test false-winner rate: once {last_look_only:.4f}, daily {every_look:.4f}")
    assert abs(last_look_only - ALPHA) <= MARGIN  # used as designed, it holds its level
    assert every_look > ALPHA + MARGIN  # peeking every day breaks it


def test_a_truly_better_challenger_is_found_and_its_interval_holds_the_true_difference():
    control, challenger = daily_looks(np.random.default_rng(7), 0.10, 0.12)
    decided = decided_at_some_look(control, challenger)
    interval = always_valid_interval(
        *control, *challenger, alpha=ALPHA, mixing_variance=MIXING_VARIANCE
    )
    first = np.argmax((interval.lower > 0) | (interval.upper < 0), axis=1)
    at_decision = np.arange(EXPERIMENTS), first
    median_day = np.median(first[decided]) + 1
    print(f"power after {DAYS} days: {decided.mean():.4f}; median decision day {median_day}")
    assert decided.mean() >= 0.8
    assert (interval.lower[at_decision][decided] > 0).all()  # never the wrong way round
    covers = (interval.lower <= 0.02) & (0.02 <= interval.upper)
    assert covers.all(axis=1).mean() >= 1 - ALPHA - MARGIN  # at every look at once


def test_the_interval_narrows_as_rows_grow_and_has_no_width_without_variance():
    widths = [
        always_valid_interval(
            n, 0.1, 0.09, n, 0.1, 0.09, alpha=ALPHA, mixing_variance=MIXING_VARIANCE
        ).half_width
        for n in (1_000, 10_000, 100_000)
    ]
    assert widths[0] > widths[1] > widths[2] > 0
    exact = always_valid_interval(
        500, 1.0, 0.0, 500, 0.0, 0.0, alpha=ALPHA, mixing_variance=MIXING_VARIANCE
    )
    assert float(exact.half_width) == 0.0 and float(exact.p_value) == 0.0


def test_a_variant_needs_two_rows_for_a_variance():
    assert summarize(np.array([1.0, 3.0])).variance == pytest.approx(2.0)
    with pytest.raises(ValueError, match="2 rows or more"):
        summarize(np.array([1.0]))
