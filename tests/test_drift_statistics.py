import math

import numpy as np
import pytest
from scipy import stats

from ctloop.components.data.profile import histogram
from ctloop.components.drift import statistics


def test_psi_of_identical_distributions_is_zero():
    shares = np.array([0.1, 0.2, 0.3, 0.4])
    assert statistics.population_stability_index(shares, shares) == 0.0


def test_psi_of_a_two_bin_shift_matches_the_hand_computed_value():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 2 + 0.25 ln 1.5
    expected = 0.25 * math.log(2.0) + 0.25 * math.log(1.5)
    value = statistics.population_stability_index([0.5, 0.5], [0.25, 0.75])
    assert value == pytest.approx(expected, abs=1e-12)
    assert value == pytest.approx(0.27465, abs=1e-5)


def test_psi_refuses_a_bin_empty_on_one_side_only_unless_smoothed():
    with pytest.raises(ValueError, match="smooth the shares first"):
        statistics.population_stability_index([0.5, 0.5], [1.0, 0.0])
    smoothed = statistics.population_stability_index(
        statistics.smoothed_shares([50, 50]), statistics.smoothed_shares([100, 0])
    )
    assert 0.0 < smoothed < math.inf


def test_smoothing_adds_half_a_count_to_every_bin():
    assert statistics.smoothed_shares([0, 3]).tolist() == [0.5 / 4.0, 3.5 / 4.0]


def test_js_distance_is_zero_for_equal_and_one_for_disjoint_distributions():
    assert statistics.jensen_shannon_distance([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    assert statistics.jensen_shannon_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def test_js_distance_stays_in_unit_interval_base_two():
    rng = np.random.default_rng(1)
    for _ in range(200):
        value = statistics.jensen_shannon_distance(rng.random(8), rng.random(8))
        assert 0.0 <= value <= 1.0
    # JS divergence in bits of (1, 0) vs (1/2, 1/2): 1/2 KL(P||M) + 1/2 KL(Q||M), M = (3/4, 1/4).
    divergence = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * math.log2(2))
    assert statistics.jensen_shannon_distance([1, 0], [0.5, 0.5]) == pytest.approx(
        math.sqrt(divergence)
    )


def test_binned_ks_equals_exact_ks_when_values_sit_on_bin_edges():
    edges = [0.0, 1.0, 2.0, 3.0, 4.0]
    rng = np.random.default_rng(2)
    reference = rng.choice([0.0, 1.0, 2.0, 3.0], size=500, p=[0.1, 0.4, 0.3, 0.2])
    current = rng.choice([0.0, 1.0, 2.0, 3.0], size=300, p=[0.3, 0.3, 0.2, 0.2])
    binned, _ = statistics.binned_ks_statistic(
        histogram(edges, reference), histogram(edges, current)
    )
    assert binned == pytest.approx(stats.ks_2samp(reference, current).statistic, abs=1e-12)


def test_exact_ks_lies_between_binned_ks_and_its_error_bound():
    rng = np.random.default_rng(3)
    reference = rng.normal(0.0, 1.0, 2_000)
    edges = np.quantile(reference, np.linspace(0, 1, 11))
    for shift in (0.0, 0.2, 0.5, 1.0):
        current = rng.normal(shift, 1.3, 1_500)
        binned, bound = statistics.binned_ks_statistic(
            histogram(edges, reference), histogram(edges, current)
        )
        exact = statistics.exact_ks_statistic(reference, current)
        assert binned <= exact + 1e-12
        assert exact <= binned + bound + 1e-12
        assert bound <= 0.1 + 1e-9  # never above the largest reference bin share


def test_cramers_v_equals_contingency_v_of_equally_weighted_rows():
    reference = np.array([0.5, 0.3, 0.2])
    current = np.array([0.2, 0.3, 0.4, 0.1])
    reference = np.append(reference, 0.0)
    table = np.vstack([reference * 1_000, current * 1_000])
    chi2 = stats.chi2_contingency(table, correction=False).statistic
    assert statistics.cramers_v(reference, current) == pytest.approx(math.sqrt(chi2 / 2_000))
    assert statistics.cramers_v([1, 0], [0, 1]) == pytest.approx(1.0)


def test_chi_square_matches_scipy_and_ignores_categories_absent_on_both_sides():
    chi2, p_value = statistics.chi_square([10, 20, 0, 30], [15, 15, 0, 30])
    expected = stats.chi2_contingency([[10, 20, 30], [15, 15, 30]], correction=False)
    assert chi2 == pytest.approx(expected.statistic)
    assert p_value == pytest.approx(expected.pvalue)


def test_noise_bounds_shrink_with_sample_size_and_hold_under_no_drift():
    rng = np.random.default_rng(4)
    shares = np.full(10, 0.1)
    n, m, alpha = 500, 5_000, 0.01
    psi_bound = statistics.psi_noise_bound(10, n, m, alpha)
    js_bound = statistics.js_distance_noise_bound(10, n, m, alpha)
    v_bound = statistics.cramers_v_noise_bound(10, n, m, alpha)
    exceed = {"psi": 0, "js": 0, "v": 0}
    for _ in range(400):
        r = rng.multinomial(m, shares)
        c = rng.multinomial(n, shares)
        psi = statistics.population_stability_index(
            statistics.smoothed_shares(r), statistics.smoothed_shares(c)
        )
        exceed["psi"] += psi > psi_bound
        exceed["js"] += statistics.jensen_shannon_distance(r, c) > js_bound
        exceed["v"] += statistics.cramers_v(r, c) > v_bound
    assert max(exceed.values()) <= 12  # alpha = 1 % of 400 is 4 expected
    assert statistics.psi_noise_bound(10, 100 * n, m, alpha) < psi_bound
    assert statistics.ks_noise_bound(100, None, 0.001) == pytest.approx(
        math.sqrt(math.log(2000) / 2) / 10
    )


def test_missing_and_unseen_noise_bounds_allow_rare_events_in_small_windows():
    # 1 missing value in 20 rows when the reference had none is within noise.
    assert statistics.missing_rate_noise_bound(0.0, 20, 10_000, 0.001) >= 1 / 20
    assert statistics.missing_rate_noise_bound(0.02, 1_000_000, 1_000_000, 0.001) < 0.002
    assert statistics.unseen_share_noise_bound(100, 1_000, 0.001) >= 0.02
    assert statistics.unseen_share_noise_bound(1_000_000, 1_000_000, 0.001) < 2e-5
