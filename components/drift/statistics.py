"""Drift measures between a reference distribution and a window's, and their no-drift noise.

Every measure compares shares over the same bins (numeric features: the reference profile's
quantile bins; categorical features: the reference categories plus one "unseen" bucket), so
it costs O(bins) however large the window is. Each is an *effect size*: it converges to a
property of the two distributions as the samples grow, instead of growing with n the way a
test statistic or p-value does, which is what lets one threshold hold at any sample size.

Small samples are noisy, so each measure also has a `*_noise_bound`: the value it stays below
with probability about 1 - alpha when there is no drift, given the window size n and the
reference size m. A decision threshold of max(effect threshold, noise bound) keeps the
false-alarm rate near alpha at small n and is the plain effect threshold at large n. The
bounds come from the multinomial sampling distribution: for shares estimated from n and m
draws of the same distribution, sum((c - r)^2 / r) ~ chi2(k - 1) * (1/n + 1/m), and

- PSI = sum((c - r) ln(c / r)) ~ sum((c - r)^2 / r) to second order,
- JS divergence (bits) ~ sum((c - r)^2 / r) / (8 ln 2),
- Cramér's V^2 (equal-weight rows, see `cramers_v`) ~ sum((c - r)^2 / r) / 4,
- sqrt(nm / (n + m)) * KS follows the Kolmogorov distribution: P(> x) <= 2 exp(-2 x^2).

Smoothing: PSI divides by shares, so an empty bin would make it infinite. `smoothed_shares`
adds a Jeffreys pseudo-count of 1/2 to every bin's *count* (the reference's counts are its
shares times its non-missing count). A fixed share floor (the common eps = 1e-4) is not used
because it makes one empty bin in a small window worth r ln(r / eps), about 0.7 for r = 0.1:
a false alarm from sampling alone. The pseudo-count's pull shrinks as 1/n and vanishes on
large windows. JS distance and Cramér's V are finite with empty bins and use raw shares.
"""

import math

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

JEFFREYS_PSEUDO_COUNT = 0.5


def smoothed_shares(counts: np.ndarray, pseudo_count: float = JEFFREYS_PSEUDO_COUNT) -> np.ndarray:
    """Shares of `counts` after adding `pseudo_count` to every bin: (c + a) / (n + k a)."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts + pseudo_count) / (counts.sum() + pseudo_count * len(counts))


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI = sum((c - r) ln(c / r)) over bins, in nats; 0 for identical shares.

    Both arguments are shares over the same bins (each normalised to sum 1 here). A bin that is
    empty on both sides adds nothing; a bin empty on one side only is an error, because PSI is
    infinite there: smooth the shares first (`smoothed_shares`).
    """
    r, c = _shares(reference), _shares(current)
    used = (r > 0) | (c > 0)
    if np.any(used & ((r == 0) | (c == 0))):
        raise ValueError(
            "PSI is infinite when a bin is empty on one side only; smooth the shares first "
            f"(reference {r.tolist()}, current {c.tolist()})"
        )
    r, c = r[used], c[used]
    return float(np.sum((c - r) * np.log(c / r)))


def jensen_shannon_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Square root of the Jensen-Shannon divergence in bits: 0 identical, 1 disjoint."""
    r, c = _shares(reference), _shares(current)
    return float(min(1.0, jensenshannon(r, c, base=2.0)))


def binned_ks_statistic(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(KS lower bound, error bound) from bin shares: the largest CDF gap at the bin edges.

    Bins are left-closed, so the cumulative share at edge e_i is the share of values below
    e_i: a point of both empirical CDFs (their left limits), hence the gap there never exceeds
    the exact two-sample KS statistic. Inside bin i each CDF rises by its own share (r_i and
    c_i), so the gap can exceed the larger of its edge values by at most min(r_i, c_i): the
    exact KS lies in [statistic, statistic + max_i min(r_i, c_i)], and that bound is at most
    the largest reference bin share. It is exact when all values sit on bin edges.
    """
    r, c = _shares(reference), _shares(current)
    gaps = np.abs(np.cumsum(c)[:-1] - np.cumsum(r)[:-1])
    statistic = float(gaps.max()) if len(gaps) else 0.0
    return statistic, float(np.minimum(r, c).max())


def exact_ks_statistic(reference_values: np.ndarray, current_values: np.ndarray) -> float:
    """The two-sample KS statistic of raw values (NaN dropped); needs both samples in memory."""
    r = np.asarray(reference_values, dtype=np.float64)
    c = np.asarray(current_values, dtype=np.float64)
    r, c = r[~np.isnan(r)], c[~np.isnan(c)]
    if len(r) == 0 or len(c) == 0:
        raise ValueError(
            f"exact KS needs values on both sides; got {len(r)} reference and {len(c)} current"
        )
    return float(stats.ks_2samp(r, c).statistic)


def chi_square(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the chi-square test of homogeneity on the 2 x k count table.

    Categories with no count on either side are dropped (they carry no information). The
    statistic grows with n for any fixed difference, so it is reported, never thresholded;
    `cramers_v` is its effect size.
    """
    table = np.vstack(
        [np.asarray(reference_counts, np.float64), np.asarray(current_counts, np.float64)]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def cramers_v(reference: np.ndarray, current: np.ndarray) -> float:
    """Cramér's V of the 2 x k table whose two rows are the shares, weighted equally.

    V = sqrt(chi2 / N) of that table = sqrt(sum((r - c)^2 / (r + c)) / 2), in [0, 1]. On the
    raw count table V would also depend on the ratio of the two sample sizes (a window 100x
    smaller than the reference would shrink V about 10x for the same shift), so the rows are
    given equal weight: V is then a property of the two distributions alone.
    """
    r, c = _shares(reference), _shares(current)
    total = r + c
    used = total > 0
    return float(math.sqrt(0.5 * np.sum((r[used] - c[used]) ** 2 / total[used])))


def psi_noise_bound(bins: int, n: int, m: float | None, alpha: float) -> float:
    """PSI that no-drift sampling stays below with probability ~1 - alpha."""
    return _chi2_quantile(bins, alpha) * _inverse_sizes(n, m)


def js_distance_noise_bound(bins: int, n: int, m: float | None, alpha: float) -> float:
    """JS distance that no-drift sampling stays below with probability ~1 - alpha."""
    return math.sqrt(_chi2_quantile(bins, alpha) * _inverse_sizes(n, m) / (8.0 * math.log(2.0)))


def cramers_v_noise_bound(bins: int, n: int, m: float | None, alpha: float) -> float:
    """Cramér's V (`cramers_v`) that no-drift sampling stays below with probability ~1 - alpha."""
    return math.sqrt(_chi2_quantile(bins, alpha) * _inverse_sizes(n, m) / 4.0)


def ks_noise_bound(n: int, m: float | None, alpha: float) -> float:
    """KS statistic that no-drift sampling stays below with probability >= 1 - alpha.

    The Kolmogorov distribution's tail P(sqrt(nm/(n+m)) D > x) <= 2 exp(-2 x^2). It
    bounds the exact statistic, so it bounds the binned one (a lower bound of the exact) too.
    """
    return math.sqrt(-math.log(alpha / 2.0) / 2.0) * math.sqrt(_inverse_sizes(n, m))


def missing_rate_noise_bound(reference_rate: float, n: int, m: float | None, alpha: float) -> float:
    """|window missing rate - reference rate| that no-drift sampling stays below (~1 - alpha).

    The window's missing count is binomial(n, p): its exact two-sided quantiles give the
    window's part, a normal term the reference's own sampling error. p is the reference rate
    with one pseudo-missing and one pseudo-present row, so a reference with no missing value
    still allows a window a rare one.
    """
    reference_n = m if m is not None and math.isfinite(m) else 1e12
    p = (reference_rate * reference_n + 1.0) / (reference_n + 2.0)
    high = stats.binom.ppf(1.0 - alpha / 2.0, n, p) / n - reference_rate
    low = reference_rate - stats.binom.ppf(alpha / 2.0, n, p) / n
    reference_term = stats.norm.ppf(1.0 - alpha / 2.0) * math.sqrt(p * (1.0 - p) / reference_n)
    return float(max(high, low, 0.0) + reference_term)


def unseen_share_noise_bound(n: int, m: float | None, alpha: float) -> float:
    """Share of window values in categories the reference never saw, under no drift (~1 - alpha).

    A category absent from m reference values has probability below 3/m with 95% confidence
    (the rule of three); the window's count of such values is then at most binomial(n, 3/m).
    """
    if m is None or not math.isfinite(m) or m <= 0:
        return 0.0
    return float(stats.binom.ppf(1.0 - alpha, n, min(1.0, 3.0 / m)) / n)


def _shares(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0 or np.any(values < 0) or not np.isfinite(values).all():
        raise ValueError(f"shares must be a non-empty list of finite values >= 0; got {values}")
    total = values.sum()
    if total <= 0:
        raise ValueError(f"shares must not all be 0; got {values.tolist()}")
    return values / total


def _chi2_quantile(bins: int, alpha: float) -> float:
    return float(stats.chi2.ppf(1.0 - alpha, max(bins - 1, 1)))


def _inverse_sizes(n: int, m: float | None) -> float:
    if n <= 0:
        raise ValueError(f"a noise bound needs a window of at least one value; got n = {n}")
    return 1.0 / n + (1.0 / m if m is not None and m > 0 and math.isfinite(m) else 0.0)
