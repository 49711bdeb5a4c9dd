"""An always-valid test of a difference in means: an experiment may be checked every day.

A fixed-horizon test (a z-test at 95 %) keeps its 5 % false-positive rate only when it is
looked at once, at a sample size chosen in advance. Checked daily as labels arrive and stopped
at the first "significant" look, it declares a winner between two equal variants far more
often (28 % of the time over 30 daily looks in `tests/test_experiment_sequential.py`'s
simulation, where this test's rate is 1 %). This module uses the mixture sequential
probability ratio test (mSPRT) of Johari, Koomen, Pekelis and Walsh, "Always valid inference:
continuous monitoring of A/B tests" (Operations Research 70(3), 2022; arXiv:1512.04922), whose
p-value and interval hold at every look at once: the chance that the interval ever, at any
look, misses the true difference is at most alpha.

Derivation (their normal case). Let d be the challenger's mean minus the control's
and V = s0^2/n0 + s1^2/n1 its variance. In information time 1/V the difference behaves like a
Brownian motion with drift theta; the likelihood ratio of theta against 0, averaged over a
normal mixture theta ~ N(0, tau^2), is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))),

a nonnegative martingale with mean 1 under theta = 0, so by Ville's inequality it ever
reaches 1/alpha with probability at most alpha. The always-valid p-value is min(1, 1/Lambda);
inverting the test at every theta gives the confidence sequence

    d +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))).

The per-row variances are estimated from the data (the normal approximation); Waudby-Smith,
Arbour, Sinha, Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic
confidence sequences" (arXiv:2103.06476, 2021) show that this plug-in keeps the guarantee
asymptotically; with tau^2 = rho^2 * s^2 (`mixing_variance` = rho^2, s^2 the mean of the two
per-row variances) the interval above has the form of their Gaussian-mixture asymptotic
confidence sequence, written for a difference of means. Rows per variant should be in the
hundreds at least before the approximation is trusted, which the policy's `min_labelled_rows`
ensures.

The analysis is stateless (it reads the whole log each time), so each check's p-value is for
that look; the running minimum over looks would be valid too, and smaller, but needs state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """One variant's per-row metric values, summed up: all the test needs of them."""

    rows: int
    mean: float
    variance: float
    """The sample variance (n - 1 in the denominator)."""


def summarize(values: np.ndarray) -> Summary:
    """Rows, mean and sample variance of one variant's per-row values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError(
            f"a variant needs 2 rows or more to estimate a variance, got {values.size}"
        )
    return Summary(values.size, float(values.mean()), float(values.var(ddof=1)))


@dataclass(frozen=True)
class Interval:
    """The challenger's mean minus the control's, its always-valid interval and p-value.

    Every field is an array (or a float) shaped as the inputs broadcast.
    """

    difference: np.ndarray
    half_width: np.ndarray
    p_value: np.ndarray

    @property
    def lower(self) -> np.ndarray:
        return self.difference - self.half_width

    @property
    def upper(self) -> np.ndarray:
        return self.difference + self.half_width


def always_valid_interval(
    control_rows,
    control_mean,
    control_variance,
    challenger_rows,
    challenger_mean,
    challenger_variance,
    *,
    alpha: float,
    mixing_variance: float,
) -> Interval:
    """The mSPRT interval and p-value of (challenger mean - control mean), vectorised.

    Every argument but the keywords may be an array (one entry per experiment, per look):
    the simulations in the tests check thousands of looks in one call. The interval excludes
    0 exactly when the p-value is at most `alpha`. Two variants with no variance at all give
    an interval of width 0 (their difference is known).
    """
    n0, m0, s0 = (
        np.asarray(x, dtype=np.float64) for x in (control_rows, control_mean, control_variance)
    )
    n1, m1, s1 = (
        np.asarray(x, dtype=np.float64)
        for x in (challenger_rows, challenger_mean, challenger_variance)
    )
    difference = m1 - m0
    v = s0 / n0 + s1 / n1
    tau2 = mixing_variance * (s0 + s1) / 2.0
    known = v <= 0.0  # neither variant varies: the difference is exact
    v_safe = np.where(known, 1.0, v)
    ratio = np.where(known, 1.0, tau2 / v_safe)  # tau^2 / V, the mixture's scale in information
    log_lambda = difference**2 / (2.0 * v_safe) * ratio / (1.0 + ratio) - 0.5 * np.log1p(ratio)
    half_width = np.sqrt(
        v_safe * (1.0 + 1.0 / ratio) * (2.0 * np.log(1.0 / alpha) + np.log1p(ratio))
    )
    p_value = np.minimum(1.0, np.exp(-log_lambda))
    exact_p = np.where(difference == 0.0, 1.0, 0.0)
    return Interval(
        difference=difference,
        half_width=np.where(known, 0.0, half_width),
        p_value=np.where(known, exact_p, p_value),
    )
