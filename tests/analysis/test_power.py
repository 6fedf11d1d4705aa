"""Power: the maths against hand-computed values, then `harness plan --pilot` end to end."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import power
from harness.analysis.stats import interaction_design

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "tests" / "fixtures" / "smoke_results"
Z = 1.959963984540054 + 0.8416212335729143  # two-sided 5% + 80% power, normal quantiles


def two_by_two(seeds: int):
    """d, c in {0, 1}: the interaction coefficient is m11 - m10 - m01 + m00 of the cell means."""
    cells = [(d, c) for d in (0, 1) for c in (0, 1)] * seeds
    design = interaction_design([d for d, _ in cells], [c for _, c in cells])
    return design, [f"{d}{c}" for d, c in cells]


def test_pooled_within_sd_by_hand():
    # cell a: 1, 3 (mean 2); cell b: 4, 6, 8 (mean 6): SS = 2 + 8 = 10 on 5 - 2 = 3 df
    sd, df = power.pooled_within_sd(pd.Series([1, 3, 4, 6, 8]), pd.Series(list("aabbb")))
    assert (sd, df) == (pytest.approx(math.sqrt(10 / 3)), 3)
    assert power.pooled_within_sd(pd.Series([1, 2]), pd.Series(["a", "b"]))[1] == 0


def test_interaction_se_on_a_two_by_two_by_hand():
    # Var(m11 - m10 - m01 + m00) = 4 sigma^2 / k from seeds, plus 4 sigma_eval^2 from evaluation
    # (each cell's rows' luck is shared by its k seeds, so it does not shrink with k).
    design, cells = two_by_two(seeds=3)
    assert power.interaction_se(design, cells, 0.02, 0.0) == pytest.approx(2 * 0.02 / math.sqrt(3))
    expected = math.sqrt(4 * 0.02 ** 2 / 3 + 4 * 0.01 ** 2)  # 0.030551
    assert power.interaction_se(design, cells, 0.02, 0.01) == pytest.approx(expected)
    assert expected == pytest.approx(0.030551, abs=1e-6)


def test_singular_design_has_no_se():
    design = interaction_design([1, 1, 4, 4], [2, 2, 2, 2])  # one capacity level
    assert math.isnan(power.interaction_se(design, list("aabb"), 0.01, 0.0))


def test_minimum_detectable_tends_to_the_normal_formula_and_has_80_percent_power():
    assert power.minimum_detectable(0.01, df=1e7) == pytest.approx(Z * 0.01, rel=1e-3)
    mde = power.minimum_detectable(0.01, df=4)
    assert power.power_at(mde, 0.01, 4) == pytest.approx(0.80, abs=1e-6)
    assert mde > Z * 0.01  # few residual df: t tails are heavier than normal ones
    assert power.power_at(0.0, 0.01, 4) == pytest.approx(0.05)  # no effect: the test's level
    assert math.isnan(power.minimum_detectable(0.01, df=0))


def test_seeds_needed_is_the_first_count_with_enough_power():
    design, cells = two_by_two(seeds=1)
    k = power.seeds_needed(design, cells, sigma_seed=1.0, sigma_eval=0.0, effect=2.0)
    # SE with k seeds = 2 / sqrt(k), df = 4k - 4; check k by hand against power_at
    assert power.power_at(2.0, 2 / math.sqrt(k), 4 * k - 4) >= 0.8
    assert power.power_at(2.0, 2 / math.sqrt(k - 1), 4 * (k - 1) - 4) < 0.8
    assert k == 9  # normal approximation: (2 * 2.80 / 2)^2 = 7.85 -> 8, plus t's heavier tails


def test_evaluation_noise_sets_a_floor_that_no_seed_count_beats():
    design, cells = two_by_two(seeds=1)
    floor = power.eval_floor(design, cells, sigma_eval=0.01)
    assert floor == pytest.approx(Z * 2 * 0.01)
    assert power.seeds_needed(design, cells, 0.01, 0.01, effect=0.9 * floor) is None
    assert power.seeds_needed(design, cells, 0.01, 0.01, effect=1.5 * floor) is not None


def test_plan_power_rescales_evaluation_noise_to_the_planned_rows():
    noise = power.PilotNoise(results_dir=Path("p"), sigma_seed=0.01, seed_df=20,
                             sigma_eval=0.02, eval_rows=16, trials=24, cells=12, guessed_tasks=0)
    planned = pd.DataFrame({"n_domains": [1, 1, 4, 4] * 2, "lora_rank": [4, 16] * 4,
                            "seed": [0] * 4 + [1] * 4})
    planned["cell_id"] = planned["n_domains"].astype(str) + "-" + planned["lora_rank"].astype(str)
    plan = power.plan_power(planned, noise, effect=0.01, eval_rows=64)
    assert plan.sigma_eval == pytest.approx(0.01)  # 4x the rows: half the SE
    assert (plan.trials, plan.cells, plan.seeds, plan.df) == (8, 4, 2, 4)
    assert plan.mde_seed < plan.mde and plan.floor < plan.mde
    assert plan.seeds_for_effect_seed <= plan.seeds_for_effect


def test_estimate_noise_from_the_smoke_pilot():
    noise = power.estimate_noise(SMOKE)
    assert (noise.trials, noise.cells, noise.seed_df, noise.eval_rows) == (8, 4, 4, 16)
    assert 0 < noise.sigma_seed < 0.05 and 0 < noise.sigma_eval < 0.1


def test_plan_with_a_pilot_end_to_end():
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "plan", "sweeps/smoke.yaml", "--pilot",
         str(SMOKE), "--effect", "0.01", "--set", "eval.per_subtask=240"],  # the world has >= 244 a subtask
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "8 trials = 4 cells x 2 seed(s)" in out and "df 4" in out
    expected = power.plan_power(_smoke_plan(), power.estimate_noise(SMOKE), effect=0.01,
                                eval_rows=240)
    assert f"|interaction| >= {expected.mde:.4f}" in out
    assert f"needs {expected.seeds_for_effect} seed(s) per cell for 80% power" in out


def _smoke_plan() -> pd.DataFrame:
    from harness.spec.load import load_sweep
    from harness.sweep.driver import planned_trials

    trials = planned_trials(load_sweep(REPO / "sweeps" / "smoke.yaml", []))
    return pd.DataFrame([{**t.factors, "cell_id": t.cell_id} for t in trials if t.kind == "trial"])


def test_plan_pilot_without_records_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "plan", "sweeps/smoke.yaml", "--pilot",
         str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "no trial records" in proc.stderr


def test_replicate_keeps_one_row_per_cell():
    design, cells = two_by_two(seeds=2)
    x, names = power.replicate(design, cells, 3)
    assert x.shape == (12, 4) and sorted(set(names)) == ["00", "01", "10", "11"]
    np.testing.assert_allclose(x[:4], x[4:8])


def test_plan_pilot_json_carries_the_power_numbers():
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "plan", "sweeps/smoke.yaml", "--pilot", str(SMOKE),
         "--effect", "0.01", "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    assert len(data["trials"]) == 9 and data["power"]["effect"] == 0.01
    from harness.spec.load import load_sweep

    rows = load_sweep(REPO / "sweeps" / "smoke.yaml", []).eval.per_subtask  # the planned held-out rows
    expected = power.plan_power(_smoke_plan(), power.estimate_noise(SMOKE), effect=0.01, eval_rows=rows)
    assert data["power"]["mde"] == pytest.approx(expected.mde)
    assert data["power"]["seeds_for_effect"] == expected.seeds_for_effect
    assert data["power"]["seeds_for_effect_seed"] == expected.seeds_for_effect_seed


def test_effect_without_a_pilot_exits_2():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "sweeps/smoke.yaml",
                           "--effect", "0.01"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 2 and "--effect needs --pilot" in proc.stderr
