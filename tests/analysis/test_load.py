"""Loading records: the per-trial table, the baseline kept apart, and bad input said plainly."""

import json
from pathlib import Path

import pytest

from harness.analysis import compute_analysis
from harness.analysis.load import load_results, trial_table
from harness.errors import InputError
from harness.results import TrialStatus
from synth_results import make_baseline, make_record, make_results, write_trials

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "smoke_results"


def test_trial_table_has_overall_score_and_factors(planted_dir):
    loaded = load_results(planted_dir)
    table = trial_table(loaded.trials, "synthetic-heldout")
    assert len(table) == 36  # 38 trials, 2 failed
    assert table["domains"].iloc[0].count("+") == table["n_domains"].iloc[0] - 1
    record = loaded.successful[0]
    tracks = record.eval["synthetic-heldout"].tracks
    row = table.set_index("trial_id").loc[record.run.trial_id]
    assert row.score == pytest.approx(sum(tracks.values()) / len(tracks))
    assert {"div_entropy", "trainable_params", "lora_rank", "seed"} <= set(table.columns)


def test_baseline_is_kept_apart(planted_dir):
    a = compute_analysis(planted_dir)
    assert len(a.baseline) == 1 and a.baseline_score == pytest.approx(0.25)
    assert (a.trials["kind"] == "trial").all()


def test_empty_dir_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="no trial records found"):
        load_results(tmp_path)


def test_missing_dir_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="no such results directory"):
        load_results(tmp_path / "nope")


def test_only_unknown_schema_raises_with_the_reason(tmp_path):
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "x.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(InputError, match="schema_version 99"):
        load_results(tmp_path)


def test_unknown_schema_among_good_records_is_a_warning(tmp_path):
    make_results(tmp_path, seeds=(0, 1), ranks=(2, 4), n_domains=(1, 2))
    (tmp_path / "trials" / "future.json").write_text(json.dumps({"schema_version": 2}))
    a = compute_analysis(tmp_path)
    assert len(a.trials) == 8
    assert any("future.json" in w and "schema_version 2" in w for w in a.warnings)


def test_records_from_other_sweeps_are_left_out_with_a_warning(tmp_path):
    make_results(tmp_path, sweep="mine", seeds=(0, 1), ranks=(2, 4), n_domains=(1, 2))
    write_trials(tmp_path, [make_record(1, 2, 9, 0.9, sweep="theirs")])
    a = compute_analysis(tmp_path)
    assert a.sweep == "mine" and len(a.trials) == 8
    assert any("'theirs' (1 records)" in w for w in a.warnings)


def test_failed_trials_only_still_analyses(tmp_path):
    write_trials(tmp_path, [make_record(1, 4, s, None, status=TrialStatus.FAILED, reason="oom")
                            for s in range(2)] + [make_baseline(0.2)])
    a = compute_analysis(tmp_path)
    assert a.trials.empty and len(a.failed) == 2 and not a.fit.estimable
    assert any("no successful trials" in w for w in a.warnings)


def test_unknown_eval_set_and_diversity_get_did_you_mean(planted_dir):
    with pytest.raises(InputError, match="did you mean 'synthetic-heldout'"):
        compute_analysis(planted_dir, eval_set="synthetic-heldot")
    with pytest.raises(InputError, match="did you mean 'n_domains'"):
        compute_analysis(planted_dir, diversity="n_domain")


def test_no_baseline_is_a_warning(tmp_path):
    make_results(tmp_path, seeds=(0, 1), ranks=(2, 4), n_domains=(1, 2), baseline=None)
    assert any("no baseline record" in w for w in compute_analysis(tmp_path).warnings)


def test_pooling_over_another_varied_factor_is_said(tmp_path):
    records = [make_record(d, r, s, 0.5 + 0.1 * d) for d in (1, 2) for r in (2, 4) for s in (0, 1)]
    for record in records[::2]:  # half the trials at another data volume
        record.run.factors["volume"] = 800
        record.run.cell_id += "-v800"
    write_trials(tmp_path, records)
    assert any("differ in volume" in w for w in compute_analysis(tmp_path).warnings)


def test_records_without_capacity_keys_read_as_plain_lora(tmp_path):
    make_results(tmp_path, seeds=(0, 1), ranks=(2, 4), n_domains=(1, 2), legacy=True)
    a = compute_analysis(tmp_path)
    assert "capacity_family" not in a.loaded.successful[0].run.factors  # really old-style
    assert (a.trials["capacity_family"] == "lora").all()
    assert a.trials["capacity_budget"].isna().all() and a.trials["budget_size"].isna().all()
    assert (a.trials["adapter_params"] == a.trials["trainable_params"]).all()
    assert set(a.trials["capacity"]) == {"lora-r2", "lora-r4"}
    assert a.baseline["capacity_family"].isna().all() and (a.baseline["adapter_params"] == 0).all()
    assert a.families is None and not any("pool" in w for w in a.warnings)


def test_new_capacity_columns_are_in_the_trial_table(planted_dir):
    table = compute_analysis(planted_dir).trials
    assert {"capacity_family", "capacity", "adapter_params", "capacity_budget", "budget_size",
            "trainable_params", "adapter_bytes"} <= set(table.columns)
    assert (table["adapter_bytes"] == 2 * table["adapter_params"]).all()


def test_capacity_as_adapter_params_is_log2_of_parameters(planted_dir):
    # adapter_params = 4096 * rank, so log2 shifts by a constant: the same interaction.
    by_rank = compute_analysis(planted_dir).fit
    a = compute_analysis(planted_dir, capacity="adapter_params")
    assert a.fit.capacity == "log2(adapter_params)" and a.fit.n_obs == 36
    assert a.fit.estimate == pytest.approx(by_rank.estimate)
    assert (a.fit.ci_low, a.fit.ci_high) == pytest.approx((by_rank.ci_low, by_rank.ci_high))
    assert list(a.fit.anova.index)[1] == "log2(adapter_params)"


def test_zero_parameters_cannot_go_on_a_log2_scale(tmp_path):
    records = [make_record(d, r, s, 0.5) for d in (1, 2) for r in (2, 4) for s in (0, 1)]
    records[0].run.factors["adapter_params"] = 0
    write_trials(tmp_path, records)
    with pytest.raises(InputError, match="'adapter_params' is 0 or negative"):
        compute_analysis(tmp_path, capacity="adapter_params")


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="tests/fixtures/smoke_results not committed yet")
def test_committed_fixture_analyses_by_parameters():
    a = compute_analysis(FIXTURE, capacity="adapter_params", by_family=True)
    assert (a.trials["capacity_family"] == "lora").all()
    assert (a.trials["adapter_params"] == a.trials["trainable_params"]).all()
    assert a.fit.capacity == "log2(adapter_params)" and list(a.families.fits) == ["lora"]
