"""Mixtures: budget modes, determinism, fingerprints, contamination removal, real sources."""

from __future__ import annotations

import json

import pytest

from harness.data.mixture import build_eval_sets, build_mixture, normalise_text
from harness.errors import InputError
from harness.spec.schema import DataSpec
from harness.spec.schema import EvalSpec
from harness.tasks import registry

CONCEPT = [s.id for s in registry.subtasks_of("concept")]
TWO = CONCEPT[:2]


def test_per_subtask_mode_gives_each_subtask_its_volume():
    mix = build_mixture(TWO, 10, DataSpec())
    assert mix.stats.examples == {TWO[0]: 10, TWO[1]: 10}
    assert mix.stats.n_subtasks == 2 and mix.stats.n_domains == 1
    assert mix.stats.entropy_bits == pytest.approx(1.0)


def test_fixed_total_mode_splits_the_volume_evenly():
    mix = build_mixture(CONCEPT[:3], 10, DataSpec(mode="fixed_total"))
    assert sorted(mix.stats.examples.values()) == [3, 3, 4]
    assert len(mix.rows) == 10


def test_homogeneous_mode_repeats_rows_when_a_source_runs_dry(tmp_path):
    rows = [{"input_field": f"q{i}?", "output_field": i % 4, "task_type": "multiple-choice",
             "metric": "accuracy"} for i in range(3)]
    path = tmp_path / "mc.json"
    path.write_text(json.dumps(rows))
    src = {"kind": "shopbench", "path": str(path), "domain": "reasoning", "subtask": "tiny_mc"}
    with pytest.raises(InputError, match="homogeneous"):
        build_mixture(["tiny_mc"], 7, DataSpec(sources=[src]))
    mix = build_mixture(["tiny_mc"], 7, DataSpec(sources=[src], mode="homogeneous"))
    assert len(mix.rows) == 7 and len({r["input_field"] for r in mix.rows}) == 3


def test_same_inputs_same_mixture_and_fingerprint():
    a, b = build_mixture(TWO, 8, DataSpec()), build_mixture(TWO, 8, DataSpec())
    assert a.rows == b.rows and a.fingerprint == b.fingerprint


@pytest.mark.parametrize("change", [
    dict(spec=DataSpec(mixture_seed=1)),
    dict(spec=DataSpec(world_seed=1)),
    dict(volume=9),
    dict(subtasks=CONCEPT[:3]),
    dict(tokenizer_id="other"),
])
def test_fingerprint_covers_rows_budgets_seed_and_tokenizer(change):
    base = build_mixture(TWO, 8, DataSpec())
    other = build_mixture(change.get("subtasks", TWO), change.get("volume", 8),
                          change.get("spec", DataSpec()), tokenizer_id=change.get("tokenizer_id", ""))
    assert other.fingerprint != base.fingerprint


def test_contamination_check_removes_planted_duplicates():
    clean = build_mixture(TWO, 8, DataSpec())
    planted = [dict(clean.rows[0]), dict(clean.rows[1])]
    planted[1]["input_field"] = "  " + planted[1]["input_field"].upper() + " "  # case/space variants
    mix = build_mixture(TWO, 8, DataSpec(), eval_rows={"bench": planted})
    assert mix.stats.contaminated_removed == 2
    banned = {normalise_text(r["input_field"]) for r in planted}
    assert not any(normalise_text(r["input_field"]) in banned for r in mix.rows)
    assert len(mix.rows) == 16  # budgets still met from the rest of the pool


def test_heldout_set_covers_every_subtask_and_is_disjoint_from_training():
    sets = build_eval_sets(EvalSpec(per_subtask=3))
    heldout = sets["synthetic-heldout"]
    assert {r["subtask"] for r in heldout} == {s.id for s in registry.all_subtasks()}
    mix = build_mixture([s.id for s in registry.all_subtasks()], 30, DataSpec(), eval_rows=sets)
    assert mix.stats.contaminated_removed == 0  # the world's splits are disjoint by construction


def test_real_shopbench_source_mixes_with_synthetic(ec_guide):
    src = {"kind": "shopbench", "path": str(ec_guide / "MCQ" / "SPA.json"), "domain": "concept",
           "subtask": "ec_spa"}
    spec = DataSpec(sources=["builtin:synthetic", src])
    mix = build_mixture(["ec_spa", TWO[0]], 5, spec)
    assert mix.stats.examples == {"ec_spa": 5, TWO[0]: 5}
    assert all(r["task_type"] == "multiple-choice" for r in mix.rows if r["subtask"] == "ec_spa")


def test_homogeneous_mode_repeats_the_whole_synthetic_world_past_its_capacity():
    from harness.tasks import synthetic

    capacity = synthetic.row_capacity("purchase_obstacle", "train", 0)  # the smallest subtask (~1000)
    mix = build_mixture(["purchase_obstacle"], capacity + 50, DataSpec(mode="homogeneous"))
    ids = [r["row_id"] for r in mix.rows]
    assert len(ids) == capacity + 50 and len(set(ids)) == capacity  # every row of the world, then repeats
    for mode, volume in (("per_subtask", capacity + 1), ("fixed_total", 2 * capacity + 2)):
        with pytest.raises(InputError, match=rf"'purchase_obstacle'.*only {capacity} .*data.mode: homogeneous"):
            build_mixture(["purchase_obstacle", "unit_price"], volume, DataSpec(mode=mode))
