"""Statistics that say when a leaderboard difference is real: paired tests, Holm, Kendall's tau (hand cases)."""

import math

import numpy as np
import pytest

from stbench.leaderboard.stats import compare, holm, kendall_tau, neighbours_apart


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, float("nan"), 0.02])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert holm([]) == []


def test_kendall_tau_hand_computed():
    a = {"x": 0.3, "y": 0.2, "z": 0.1}
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, {"x": 0.1, "y": 0.2, "z": 0.3}) == pytest.approx(-1.0)
    # one discordant pair of three: (2 - 1) / 3
    assert kendall_tau(a, {"x": 0.3, "y": 0.1, "z": 0.2}) == pytest.approx(1 / 3)
    assert math.isnan(kendall_tau(a, {"x": 0.5, "w": 0.1}))  # one entry in common


def test_a_consistent_difference_is_significant_and_noise_is_not():
    rng = np.random.default_rng(0)
    keys = [(f, f"G{g}") for f in range(3) for g in range(50)]
    base = {k: rng.uniform(0, 0.5) for k in keys}
    better = {k: v + 0.05 + rng.normal(scale=0.01) for k, v in base.items()}
    c = compare(better, base)
    assert c.n == 150 and c.mean_diff == pytest.approx(0.05, abs=0.005)
    assert c.ci_low < c.mean_diff < c.ci_high and c.ci_low > 0 and c.p < 1e-10
    noisy = {k: v + rng.normal(scale=0.05) for k, v in base.items()}
    n = compare(noisy, base)
    assert n.ci_low < 0 < n.ci_high and n.p > 0.05


def test_only_pairs_both_sides_score_are_compared():
    a = {(0, "A"): 0.5, (0, "B"): float("nan"), (1, "A"): 0.4, (1, "C"): 0.9}
    b = {(0, "A"): 0.3, (0, "B"): 0.2, (1, "A"): 0.1}
    c = compare(a, b)
    assert c.n == 2 and c.mean_diff == pytest.approx((0.2 + 0.3) / 2)
    assert compare({}, b).n == 0 and math.isnan(compare({}, b).mean_diff)
    same = compare(b, b)
    assert same.mean_diff == 0 and same.p == 1.0


def test_the_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(1)
    a = {(0, f"G{i}"): rng.uniform() for i in range(30)}
    b = {k: v + rng.normal(scale=0.1) for k, v in a.items()}
    assert compare(a, b, seed=3) == compare(a, b, seed=3)


def test_neighbours_apart_reads_the_adjusted_p_of_each_adjacent_pair_either_way():
    adjusted = {("uni", "conch"): 0.01, ("phikon", "conch"): 0.2}
    assert neighbours_apart(["uni", "conch", "phikon", "resnet50"], adjusted) == [True, False, False]
