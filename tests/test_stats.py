"""Statistics that say when a leaderboard difference is real: paired tests, Holm, Kendall's tau (hand cases)."""

import math

import numpy as np
import pytest
from stbench.leaderboard.stats import (
    Comparison,
    compare,
    fold_differences,
    holm,
    kendall_tau,
    neighbours_apart,
    verdict,
)


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


# -- the verdict between neighbours, the site's rankings and the alpha curves (pure) -----------------------------



def test_fold_differences_are_per_fold_means_over_the_shared_finite_genes():
    a = {(0, "A"): 0.5, (0, "B"): 0.1, (0, "D"): 0.9, (1, "A"): 0.4, (1, "B"): float("nan"), (2, "C"): 0.3}
    b = {(0, "A"): 0.2, (0, "B"): 0.3, (0, "D"): 0.0, (1, "A"): 0.1, (1, "B"): 0.2}
    assert fold_differences(a, b) == pytest.approx({0: (0.3 - 0.2 + 0.9) / 3, 1: 0.3})


def test_verdict_asks_for_folds_a_small_p_an_interval_clear_of_zero_and_every_fold_agreeing():
    good = Comparison(n=150, mean_diff=0.05, ci_low=0.04, ci_high=0.06, p=1e-9)
    three = {0: 0.04, 1: 0.05, 2: 0.06}
    assert verdict(good, 1e-8, three) == ""
    assert verdict(good, 1e-8, {0: 0.04, 1: 0.06}).startswith("only 2 folds")  # however small p is
    assert verdict(good, 0.2, three).startswith("Holm-adjusted p = 0.2")
    assert verdict(good, 0.05, three).startswith("Holm-adjusted p")  # not below the level
    assert verdict(Comparison(150, 0.05, -0.01, 0.06, 1e-9), 1e-8, three) == "the 95% interval of the mean difference includes 0"
    assert verdict(good, 1e-8, {0: 0.04, 1: -0.01, 2: 0.06}) == "fold 1 goes the other way"
    assert verdict(good, 1e-8, {0: -0.04, 1: -0.01, 2: 0.06, 3: 0.1}) == "folds 0, 1 go the other way"
    assert verdict(Comparison(0, float("nan"), float("nan"), float("nan"), float("nan")), float("nan"), {}) == \
        "no gene scored by both"
    assert verdict(good, float("nan"), three) == "no test"


def _run(name: str, fold_scores: list[float], *, reducer: str = "pca", fp: str = "P") -> dict:
    mean = sum(fold_scores) / len(fold_scores)
    return {"run_id": name, "encoder": name, "reducer": reducer, "protocol_fingerprint": fp,
            "scores": {"pooled": {"mean": mean, "std": 0.0, "folds": fold_scores}}}


def test_rankings_share_a_rank_range_where_neighbours_cannot_be_told_apart():
    from stbench.leaderboard.rankings import task_rankings

    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(40)]

    def scores(n_folds: int, shift: float, noise: float, base: dict | None = None) -> dict:
        base = base or {(f, g): rng.uniform(0.1, 0.4) for f in range(n_folds) for g in genes}
        return {k: v + shift + rng.normal(scale=noise) for k, v in base.items()}

    # four folds: a clearly above b; b and c the same up to noise
    base = {(f, g): rng.uniform(0.1, 0.4) for f in range(4) for g in genes}
    s = {"a": scores(4, 0.1, 0.005, base), "b": scores(4, 0.0, 0.005, base), "c": scores(4, 0.0, 0.05, base)}

    def fold_means(d):
        return [float(np.mean([v for (f, _), v in d.items() if f == fold])) for fold in sorted({f for f, _ in d})]

    runs = [_run(k, fold_means(v)) for k, v in s.items()]
    out = task_rankings(runs, {k: {"pooled": v} for k, v in s.items()}, protocols=["P"], modes=("pooled",))
    rows = out["P"]["pooled"]["encoders"]["pca"]["rows"]
    assert rows[0]["name"] == "a"
    assert rows[0]["next"]["apart"] and rows[0]["rank"] == "1" and not rows[0]["tied"]
    assert not rows[1]["next"]["apart"] and rows[1]["rank"] == rows[2]["rank"] == "2–3" and rows[2]["tied"]
    assert rows[2]["next"] is None and out["P"]["pooled"]["n_pairs"] == 2
    # Holm over the two neighbour pairs of this page's (protocol, mode): the smaller p doubled, the larger kept or raised
    ps = sorted([rows[0]["next"]["p"], rows[1]["next"]["p"]])
    assert sorted([rows[0]["next"]["p_holm"], rows[1]["next"]["p_holm"]]) == pytest.approx(
        [min(1, 2 * ps[0]), min(1, max(2 * ps[0], ps[1]))], rel=1e-9, abs=0)

    # the same difference over two folds only: never told apart
    two = {k: {kk: vv for kk, vv in v.items() if kk[0] < 2} for k, v in s.items()}
    runs2 = [_run(k, fold_means(v)) for k, v in two.items()]
    rows2 = task_rankings(runs2, {k: {"pooled": v} for k, v in two.items()}, protocols=["P"],
                          modes=("pooled",))["P"]["pooled"]["encoders"]["pca"]["rows"]
    assert [r["rank"] for r in rows2] == ["1–3"] * 3
    assert all(r["next"]["reason"].startswith("only 2 folds") for r in rows2[:2])


def test_alpha_curve_by_hand():
    from stbench.leaderboard.sweeps import alpha_curve

    hest0, hest1 = 100 / (10 * 2), 100 / (8 * 2)  # folds with 10 and 8 features, 2 genes
    rows = []
    for fold, hest, vals in ((0, hest0, {0.1: (0.1, 0.3), 1.0: (0.4, 0.6), 10.0: (0.5, 0.5), hest0: (0.49, 0.5)}),
                             (1, hest1, {0.1: (0.0, 0.2), 1.0: (0.2, 0.2), 10.0: (0.3, float("nan")), hest1: (0.1, 0.1)})):
        for alpha, (g1, g2) in vals.items():
            rows += [(fold, "G1", alpha, g1), (fold, "G2", alpha, g2)]
    run = {"run_id": "r", "encoder": "e", "reducer": "pca", "protocol_fingerprint": "P", "fold_ids": [0, 1],
           "n_features": [10, 8], "n_genes_per_fold": [2, 2], "alphas": [10.0, 1.0]}
    c = alpha_curve(run, rows)
    # at the shared alphas: mean over folds of each fold's mean over its finite genes
    assert c["alphas"] == [0.1, 1.0, 10.0]
    assert c["pcc"] == pytest.approx([(0.2 + 0.1) / 2, (0.5 + 0.2) / 2, (0.5 + 0.3) / 2])
    assert c["peak"] == pytest.approx({"alpha": 10.0, "pcc": 0.4})
    assert c["hest"]["alphas"] == pytest.approx([5.0, 6.25]) and c["hest"]["pcc"] == pytest.approx((0.495 + 0.1) / 2)
    assert c["hest"]["alpha"] == pytest.approx(math.sqrt(5.0 * 6.25))
    assert c["gap"] == pytest.approx(0.4 - 0.2975) and c["on_plateau"] is False
    assert [(x["fold"], x["alpha"]) for x in c["cv"]] == [(0, 10.0), (1, 1.0)]
    assert c["cv_pcc"] == pytest.approx((0.5 + 0.2) / 2)
    assert "off the plateau" in c["sentence"] and "peak 0.4000 at α = 10" in c["sentence"]
    # HEST's alpha within 0.002 of the peak: on the plateau
    near = [(f, g, a, (v + 0.1025 if a in (hest0, hest1) else v)) for f, g, a, v in rows]
    c2 = alpha_curve(run, near)
    assert c2["hest"]["pcc"] == pytest.approx(0.4) and c2["on_plateau"] is True and "on the plateau" in c2["sentence"]
    assert alpha_curve(run, []) is None
