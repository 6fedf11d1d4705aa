"""Capacity as family x size: per-family interactions, their difference, and no silent pooling."""

import json
import math

import pytest
from typer.testing import CliRunner

from harness.analysis import analyze, compute_analysis
from harness.analysis.family import coefficient_diff, compare_families, default_size
from harness.analysis.stats import InteractionFit
from harness.errors import InputError
from synth_results import make_family_results, make_results

PLANTED = {"lora": 0.03, "mole": 0.0}


@pytest.fixture(scope="module")
def differing(tmp_path_factory):
    """lora and mole matched to budgets r4, r8, r16; interaction 0.03 for lora, 0 for mole."""
    return make_family_results(tmp_path_factory.mktemp("differing"), PLANTED,
                               offsets={"mole": 0.02}, rng_seed=3)


@pytest.fixture(scope="module")
def same(tmp_path_factory):
    """The null case: both families with interaction 0.03 (a fixed draw: any 95% CI misses the
    truth in 1 draw of 20, so the seed is one where both cover it, as most do)."""
    return make_family_results(tmp_path_factory.mktemp("same"), {"lora": 0.03, "mole": 0.03},
                               rng_seed=5)


def test_each_family_recovers_its_planted_interaction(differing):
    fam = compute_analysis(differing).families  # on by default: two families
    assert fam is not None and fam.size == "budget_size" and fam.reference == "lora"
    assert list(fam.fits) == ["lora", "mole"] and fam.trials == {"lora": 36, "mole": 36}
    for name, planted in PLANTED.items():
        fit = fam.fits[name]
        assert fit.ci_low <= planted <= fit.ci_high, name
    assert fam.fits["lora"].excludes_zero and not fam.fits["mole"].excludes_zero


def test_the_difference_is_found_and_flagged(differing):
    a = compute_analysis(differing)
    diff = a.families.differences.set_index("family").loc["mole"]
    assert diff.ci_low <= -0.03 <= diff.ci_high and diff.ci_high < 0
    assert a.families.differs and a.families.omnibus["p_value"] < 0.001
    assert a.families.omnibus["df_num"] == 1 and a.families.omnibus["df_den"] == 72 - 8
    assert any("differs between capacity families" in w for w in a.warnings)
    assert any("headline interaction pools them" in w for w in a.warnings)


def test_null_case_finds_no_difference(same):
    fam = compute_analysis(same).families
    diff = fam.differences.set_index("family").loc["mole"]
    assert diff.ci_low <= 0.0 <= diff.ci_high
    assert fam.differs is False and fam.omnibus["p_value"] > 0.05
    assert all(fit.ci_low <= 0.03 <= fit.ci_high for fit in fam.fits.values())


def test_per_family_fit_equals_analysing_that_family_alone(differing, tmp_path):
    both = compute_analysis(differing).families.fits["lora"]
    alone = make_family_results(tmp_path, {"lora": 0.03}, rng_seed=3)  # same draws for lora
    fit = compute_analysis(alone, capacity="budget_size").fit
    assert (fit.estimate, fit.ci_low, fit.ci_high) == pytest.approx(
        (both.estimate, both.ci_low, both.ci_high))


def test_welch_difference_matches_hand_maths():
    def fit(estimate, se, df):
        import pandas as pd

        params = pd.DataFrame({"se": [se]}, index=["d:log2(c)"])
        return InteractionFit("d", "log2(c)", n_obs=int(df) + 4, estimate=estimate, df_resid=df,
                              params=params)

    from scipy import stats as sps

    row = coefficient_diff(fit(0.01, 0.004, 10), fit(0.03, 0.003, 20), "mole", "lora")
    se = math.sqrt(0.004**2 + 0.003**2)
    df = se**4 / (0.004**4 / 10 + 0.003**4 / 20)
    half = sps.t.ppf(0.975, df) * se
    assert row["diff"] == pytest.approx(-0.02) and row["df"] == pytest.approx(df)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.02 - half, -0.02 + half))


def test_pooling_families_in_one_cell_is_flagged(differing):
    # By lora_rank, mole at budget r16 (rank 4) shares cells with lora at budget r4 (rank 4).
    warnings = compute_analysis(differing).warnings
    assert any("cells pool trials of different capacity families (lora, mole)" in w
               for w in warnings)


def test_capacity_keys_do_not_raise_false_pooling_notes(planted_dir, differing):
    assert not any("pool" in w for w in compute_analysis(planted_dir).warnings)
    # By parameters, every cell holds one family at one size: nothing is pooled.
    a = compute_analysis(differing, capacity="adapter_params")
    assert not any("cells pool" in w or "differ in" in w for w in a.warnings)


def test_ranks_without_budgets_use_the_capacity_column(tmp_path):
    root = make_family_results(tmp_path, {"lora": 0.03, "dora": 0.03}, matched=False,
                               sizes=(2, 4, 8))
    a = compute_analysis(root)
    assert a.families.size == "lora_rank" and list(a.families.fits) == ["lora", "dora"]
    assert default_size(a.trials, "adapter_params") == "adapter_params"
    assert compute_analysis(root, capacity="adapter_params").families.size == "adapter_params"


def test_one_family_only_when_asked(planted_dir):
    assert compute_analysis(planted_dir).families is None
    fam = compute_analysis(planted_dir, by_family=True).families
    assert list(fam.fits) == ["lora"] and fam.differs is None
    assert "fewer than two capacity families" in fam.omnibus["reason"]
    assert compute_analysis(planted_dir, by_family=True).families.differences.empty


def test_by_family_off_still_says_families_were_pooled(differing):
    a = compute_analysis(differing, by_family=False)
    assert a.families is None
    assert any("rerun with --by-family" in w for w in a.warnings)


def test_family_with_one_size_is_not_estimable_but_reported(tmp_path):
    root = make_family_results(tmp_path, {"lora": 0.03}, rng_seed=5)
    make_family_results(tmp_path, {"mole": 0.0}, sizes=(8,), rng_seed=6)
    fam = compute_analysis(root).families
    assert fam.fits["lora"].estimable and not fam.fits["mole"].estimable
    assert fam.differences.empty and fam.differs is None


def test_bad_size_columns_say_what_to_use(differing, planted_dir):
    with pytest.raises(InputError, match="capacity_budget.*use budget_size"):
        compute_analysis(differing, capacity="capacity_budget")
    with pytest.raises(InputError, match="budget_size.*match_params"):
        compute_analysis(planted_dir, capacity="budget_size")
    with pytest.raises(InputError, match="family size column 'capacity' is not numeric"):
        compute_analysis(differing, family_size="capacity")
    with pytest.raises(InputError, match="did you mean 'adapter_params'"):
        compute_analysis(differing, family_size="adapter_param")


def test_compare_families_on_an_empty_table():
    import pandas as pd

    fam = compare_families(pd.DataFrame(), "n_domains", "lora_rank")
    assert fam.fits == {} and fam.differs is None


def test_report_summary_and_figure(differing):
    summary = analyze(differing)
    text = summary.report_path.read_text()
    assert "## Interaction by capacity family" in text
    assert "| family | trials | budget_size levels | interaction per doubling [95% CI] |" in text
    assert "The interaction differs between families" in text and "`mole` − `lora`" in text
    assert "](figures/families.png)" in text
    assert (differing / "figures" / "families.png").stat().st_size > 1000
    data = json.loads(summary.summary_path.read_text())["family_interactions"]
    assert data["differs"] is True and data["reference"] == "lora"
    assert set(data["fits"]) == {"lora", "mole"} and data["fits"]["mole"]["residual_sd"] > 0
    assert data["differences"][0]["family"] == "mole"
    assert summary.families["differs"] is True


def test_cli_takes_capacity_and_by_family(tmp_path):
    from harness.cli import app

    root = make_results(tmp_path, seeds=(0, 1), ranks=(2, 4), n_domains=(1, 2))
    result = CliRunner().invoke(app, ["analyze", str(root), "--capacity", "adapter_params",
                                      "--by-family"])
    assert result.exit_code == 0, result.output
    assert "interaction by capacity family" not in result.output  # one family: no test to report
    data = json.loads((root / "summary.json").read_text())
    assert data["capacity"] == "adapter_params"
    assert data["interaction"]["capacity"] == "log2(adapter_params)"
    assert list(data["family_interactions"]["fits"]) == ["lora"]


def test_cli_reports_the_family_verdict(differing):
    from harness.cli import app

    result = CliRunner().invoke(app, ["analyze", str(differing)])
    assert result.exit_code == 0, result.output
    assert "interaction by capacity family: differs between lora, mole" in result.output
