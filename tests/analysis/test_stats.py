"""Statistics: planted effects are recovered, absent ones are not found, CIs match hand maths."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.analysis import compute_analysis
from harness.analysis.stats import (cell_means, design_notes, diff_ci, fit_interaction,
                                    marginal_gains, mean_ci)
from synth_results import make_results

PLANTED = 0.03


def test_planted_interaction_is_recovered_within_its_ci(planted_dir):
    fit = compute_analysis(planted_dir).fit
    assert fit.estimable
    assert fit.ci_low <= PLANTED <= fit.ci_high
    assert fit.p_value < 0.05
    assert fit.n_obs == 36  # failed trials are not in the model


def test_no_interaction_planted_gives_ci_covering_zero(null_dir):
    fit = compute_analysis(null_dir).fit
    assert fit.ci_low <= 0.0 <= fit.ci_high
    assert fit.p_value > 0.05


def test_anova_is_type_ii_with_named_terms(planted_dir):
    anova = compute_analysis(planted_dir).fit.anova
    assert list(anova.index) == ["n_domains", "log2(lora_rank)", "n_domains:log2(lora_rank)",
                                 "Residual"]
    assert anova.loc["Residual", "df"] == 36 - 4


def test_capacity_column_is_a_parameter(planted_dir):
    # trainable_params = 4096 * rank, so log2 shifts by a constant: same interaction.
    by_rank = compute_analysis(planted_dir).fit
    by_params = compute_analysis(planted_dir, capacity="trainable_params").fit
    assert by_params.capacity == "log2(trainable_params)"
    assert by_params.estimate == pytest.approx(by_rank.estimate)


def test_mean_ci_matches_hand_computed_t_interval():
    values = [0.50, 0.52, 0.57]
    # mean 0.53; sd = sqrt((0.03^2 + 0.01^2 + 0.04^2) / 2) = sqrt(0.0013); t(0.975, 2) = 4.302653
    half = 4.302652729749464 * math.sqrt(0.0013) / math.sqrt(3)
    mean, low, high = mean_ci(values)
    assert mean == pytest.approx(0.53)
    assert (low, high) == pytest.approx((0.53 - half, 0.53 + half))
    assert (low, high) == pytest.approx((0.440434, 0.619566), abs=1e-6)


def test_mean_ci_with_one_seed_has_no_interval():
    mean, low, high = mean_ci([0.4])
    assert mean == 0.4 and math.isnan(low) and math.isnan(high)


def test_diff_ci_is_welch():
    a, b = [0.60, 0.62, 0.64], [0.50, 0.52, 0.57]
    va, vb = 0.0004 / 3, 0.0013 / 3  # sample variance / n
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = sps.t.ppf(0.975, dof) * math.sqrt(va + vb)
    diff, low, high = diff_ci(a, b)
    assert diff == pytest.approx(0.09)
    assert (low, high) == pytest.approx((0.09 - half, 0.09 + half))


def test_cell_means_counts_seeds_per_cell():
    frame = pd.DataFrame({"d": [1, 1, 1, 2], "r": [4, 4, 4, 4], "score": [0.5, 0.52, 0.57, 0.7]})
    cells = cell_means(frame, ["d", "r"]).set_index("d")
    assert cells.loc[1, "n"] == 3 and cells.loc[1, "mean"] == pytest.approx(0.53)
    assert cells.loc[1, "sd"] == pytest.approx(math.sqrt(0.0013))
    assert cells.loc[2, "n"] == 1 and math.isnan(cells.loc[2, "ci_low"])


def test_marginal_gains_equal_planted_slope_without_noise(tmp_path):
    a = compute_analysis(make_results(tmp_path, noise=0.0))
    for _, row in a.gains.iterrows():
        assert row.gain == pytest.approx(0.05 + PLANTED * math.log2(row.lora_rank))
    assert len(a.gains) == 3 * 3  # 3 steps between 4 levels, at each of 3 ranks


def _frame(levels_d, levels_r, seeds):
    rng = np.random.default_rng(0)
    rows = [{"d": d, "r": r, "score": rng.normal(0.5, 0.01)}
            for d in levels_d for r in levels_r for _ in range(seeds)]
    return pd.DataFrame(rows)


def test_one_level_of_a_factor_means_no_interaction():
    fit = fit_interaction(_frame([1, 2, 3], [8], 3), "d", "r")
    assert not fit.estimable and "fewer than 2 levels" in fit.reason
    assert any("only one level" in n for n in design_notes(_frame([1, 2], [8], 3), "d", "r"))


def test_design_notes_flag_one_seed_and_imbalance():
    assert any("one seed per cell" in n for n in design_notes(_frame([1, 2], [4, 8], 1), "d", "r"))
    unbalanced = pd.concat([_frame([1, 2], [4, 8], 3), _frame([1], [4], 1)])
    assert any("unbalanced" in n for n in design_notes(unbalanced, "d", "r"))
    assert design_notes(_frame([1, 2], [4, 8], 3), "d", "r") == []


def test_too_few_trials_for_the_model():
    fit = fit_interaction(_frame([1, 2], [4, 8], 1), "d", "r")
    assert not fit.estimable and "degrees of freedom" in fit.reason


def test_marginal_gains_empty_with_one_level():
    assert marginal_gains(_frame([1], [4, 8], 2), "d", "r").empty
