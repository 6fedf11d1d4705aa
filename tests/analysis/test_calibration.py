"""Permutation calibration: the interaction test rejects a true null at about its nominal rate.

Runs on the real smoke sweep's records (tests/fixtures/smoke_results: 8 trials of builtin:tiny, 2
domain sets x 2 ranks x 2 seeds), refitting the OLS directly (interaction_t) for each permutation.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from harness.analysis import compute_analysis
from harness.analysis.calibration import SCHEMES, permutation_fpr
from harness.analysis.stats import (DESIGN_COLUMNS, fit_interaction, frame_design,
                                    interaction_t)
from harness.errors import InputError

SMOKE = Path(__file__).resolve().parents[1] / "fixtures" / "smoke_results"


@pytest.fixture(scope="module")
def smoke():
    return compute_analysis(SMOKE)


def test_design_matrix_is_the_one_statsmodels_fits(smoke):
    frame = pd.DataFrame({"score": smoke.trials["score"], "diversity": smoke.trials["n_domains"],
                          "capacity": np.log2(smoke.trials["lora_rank"].astype(float))})
    model = smf.ols("score ~ diversity * capacity", data=frame).fit().model
    np.testing.assert_allclose(frame_design(smoke.trials, "n_domains", "lora_rank"), model.exog)
    assert model.exog_names == list(DESIGN_COLUMNS)


def test_fast_refit_matches_the_reported_fit(smoke):
    fit = fit_interaction(smoke.trials, "n_domains", "lora_rank")
    design = frame_design(smoke.trials, "n_domains", "lora_rank")
    estimate, se, df, p = interaction_t(design, smoke.trials["score"])
    row = fit.params.loc["n_domains:log2(lora_rank)"]
    assert estimate == pytest.approx(fit.estimate, rel=1e-9)
    assert se == pytest.approx(row["se"], rel=1e-9)
    assert (df, p) == (pytest.approx(fit.df_resid), pytest.approx(fit.p_value, rel=1e-9))


def test_interaction_test_holds_its_level_under_residual_permutations(smoke):
    # Main effects kept, interaction removed (Freedman-Lane): the null the test is about.
    result = permutation_fpr(smoke.trials, "n_domains", "lora_rank", n_perm=1000, seed=0)
    assert result.n_perm == 1000 and result.distinct > 900
    assert result.fpr <= 0.07, result


def test_label_permutations_over_every_interaction_test_of_the_report(smoke):
    # The diversity label shuffled within each rank, for the overall score and each track's score
    # (the report's five interaction tests), 200 permutations each. Eight trials leave only 36
    # distinct relabellings per outcome, so the rate is read over all five.
    outcomes = [smoke.trials] + [g for _, g in smoke.tracks.groupby("track")]
    results = [permutation_fpr(frame, "n_domains", "lora_rank", scheme="diversity", n_perm=200,
                               seed=i) for i, frame in enumerate(outcomes)]
    rejections = sum(r.rejections for r in results)
    assert all(r.n_perm == 200 for r in results) and len(results) == 5
    assert rejections / (200 * len(results)) <= 0.07, [r.fpr for r in results]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_is_near_nominal_on_a_null_with_normal_noise(scheme):
    # 4 x 3 cells x 4 seeds, main effects but no interaction, Gaussian noise: the test's own
    # assumptions hold, so every scheme should reject about 5% of the time.
    rng = np.random.default_rng(1)
    d, r, _ = (a.ravel() for a in np.meshgrid([1, 2, 3, 4], [4, 16, 64], range(4)))
    trials = pd.DataFrame({"n_domains": d, "lora_rank": r})
    trials["score"] = 0.3 + 0.02 * d + 0.01 * np.log2(r) + rng.normal(0, 0.01, len(d))
    result = permutation_fpr(trials, "n_domains", "lora_rank", scheme=scheme, n_perm=400)
    assert 0.01 <= result.fpr <= 0.10, result


def test_a_planted_interaction_is_rejected_when_it_is_not_permuted_away():
    rng = np.random.default_rng(2)
    d, r, _ = (a.ravel() for a in np.meshgrid([1, 2, 3, 4], [4, 16, 64], range(3)))
    trials = pd.DataFrame({"n_domains": d, "lora_rank": r})
    trials["score"] = 0.3 + 0.01 * d * np.log2(r) + rng.normal(0, 0.01, len(d))
    p = interaction_t(frame_design(trials, "n_domains", "lora_rank"), trials["score"])[3]
    assert p < 1e-6
    # ... and residual permutations (built from the main-effects model) remove it
    assert permutation_fpr(trials, "n_domains", "lora_rank", n_perm=200).fpr <= 0.10


def test_unknown_scheme_is_an_input_error(smoke):
    with pytest.raises(InputError, match="residuals, diversity, capacity, cells"):
        permutation_fpr(smoke.trials, "n_domains", "lora_rank", scheme="seeds")


def test_report_carries_the_calibration_line(smoke):
    from harness.analysis.report import render_report

    assert smoke.calibration is not None and smoke.calibration.n_perm >= 200
    assert "residuals permuted 200 times" in render_report(smoke)
