"""Paper-style tables: numbers against a tiny hand-made sweep."""

import math

import pytest
from scipy import stats as sps

from harness.analysis import compute_analysis
from harness.analysis.tables import fmt_ci, markdown_table
from synth_results import make_baseline, make_record, write_trials

# Two domain levels x two ranks; hand-picked overall scores per seed.
SCORES = {(1, 2): [0.50, 0.52, 0.57], (1, 4): [0.55, 0.55, 0.58],
          (2, 2): [0.60, 0.62, 0.64], (2, 4): [0.70, 0.71, 0.75]}
T975_DF2 = 4.302652729749464  # t quantile, 2 degrees of freedom


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    records = [make_record(d, r, seed, score)
               for (d, r), scores in SCORES.items() for seed, score in enumerate(scores)]
    write_trials(root, records + [make_baseline(0.4)])
    return compute_analysis(root)


def _hand_ci(values, t=T975_DF2):
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = t * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def test_cell_means_match_hand_computation(tiny):
    cells = tiny.cells.set_index(["n_domains", "lora_rank"])
    for key, values in SCORES.items():
        mean, low, high = _hand_ci(values)
        row = cells.loc[key]
        assert (row["mean"], row.ci_low, row.ci_high) == pytest.approx((mean, low, high))


def test_capability_table_shows_hand_numbers_and_baseline(tiny):
    from harness.analysis.tables import capability_table

    text = capability_table(tiny.trials, "lora_rank", tiny.baseline_score)
    assert "| n_domains | domains | r=2 | r=4 | all |" in text
    assert "| base model (no LoRA) |  | — | — | 0.400 |" in text
    # (1, r=2): mean 0.53, CI 0.530 +- 0.0896 -> [0.440, 0.620]
    assert "| 1 | behavior | 0.530 [0.440, 0.620] |" in text
    pooled = SCORES[(1, 2)] + SCORES[(1, 4)]  # the "all" column pools ranks: 6 seeds, 5 df
    mean, low, high = _hand_ci(pooled, t=sps.t.ppf(0.975, 5))
    assert text.splitlines()[3].endswith(f"| {mean:.3f} [{low:.3f}, {high:.3f}] |")


def test_rank_table_rows_per_rank(tiny):
    from harness.analysis.tables import rank_table

    text = rank_table(tiny.trials, tiny.tracks, "lora_rank", {"overall": 0.4})
    mean_r2 = sum(SCORES[(1, 2)] + SCORES[(2, 2)]) / 6
    assert f"| r=2 | 6 | {mean_r2:.3f} [" in text
    assert "track 1" in text and "base model (no LoRA)" in text


def test_task_ablation_rows_by_subtasks(tiny):
    from harness.analysis.tables import task_ablation_table

    text = task_ablation_table(tiny.trials, "lora_rank", None)
    assert text.splitlines()[0].startswith("| n_subtasks |")
    assert [line.split("|")[1].strip() for line in text.splitlines()[2:]] == ["2", "4"]


def test_fmt_ci_says_when_there_is_no_ci():
    assert fmt_ci(0.5, math.nan, math.nan, 1) == "0.500 (n=1, no CI)"
    assert fmt_ci(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]"


def test_markdown_table_escapes_pipes_and_newlines():
    text = markdown_table(["a"], [["x | y\nz"]])
    assert text.splitlines()[-1] == "| x \\| y z |"
