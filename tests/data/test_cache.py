"""The mixture cache: deterministic keys, cached == built, one build per distinct mixture in the
driver, broken entries rebuilt with a warning, and `harness data show` printing the Vendi score."""

from __future__ import annotations

import json
import logging
import os

import pytest
from typer.testing import CliRunner

from harness.spec.schema import DataSpec, EvalSpec, SweepSpec
from harness.data.cache import (META_FILE, ROWS_FILE, load_or_build_mixture, mixture_key, prepare_mixtures,
                                with_embedding_diversity)
from harness.data.mixture import build_eval_sets, build_mixture
from harness.tasks import registry

CONCEPT = [s.id for s in registry.subtasks_of("concept")]
TWO = CONCEPT[:2]
NO_VENDI = DataSpec(embedding_diversity_sample=0)  # most tests need no embeddings: fast
SMALL_VENDI = DataSpec(embedding_diversity_sample=16)


@pytest.fixture(scope="module")
def eval_sets():
    return build_eval_sets(EvalSpec(per_subtask=2))


def test_keys_are_deterministic_and_cover_what_decides_the_mixture(eval_sets):
    base = mixture_key(TWO, 8, NO_VENDI, eval_sets)
    assert base == mixture_key(list(TWO), 8, DataSpec(embedding_diversity_sample=0), eval_sets)
    changed = [
        mixture_key(CONCEPT[:3], 8, NO_VENDI, eval_sets),
        mixture_key(TWO, 9, NO_VENDI, eval_sets),
        mixture_key(TWO, 8, NO_VENDI.model_copy(update={"mode": "homogeneous"}), eval_sets),
        mixture_key(TWO, 8, NO_VENDI.model_copy(update={"mixture_seed": 1}), eval_sets),
        mixture_key(TWO, 8, SMALL_VENDI, eval_sets),  # the cached stats hold the Vendi score
        mixture_key(TWO, 8, NO_VENDI, None),  # other evaluation inputs: other contamination
        mixture_key(TWO, 8, NO_VENDI, {"x": [{"input_field": "another question"}]}),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    # evaluation rows matter only through their inputs, and not at all without the check
    unchecked = NO_VENDI.model_copy(update={"contamination_check": False})
    assert mixture_key(TWO, 8, unchecked, eval_sets) == mixture_key(TWO, 8, unchecked, None)


def test_an_edited_source_file_gets_a_new_key(tmp_path):
    path = tmp_path / "mc.json"
    rows = [{"input_field": f"q{i}?", "output_field": 0, "task_type": "multiple-choice",
             "metric": "accuracy"} for i in range(3)]
    path.write_text(json.dumps(rows))
    data = DataSpec(sources=[{"kind": "shopbench", "path": str(path), "domain": "reasoning",
                              "subtask": "tiny_mc"}], embedding_diversity_sample=0)
    before = mixture_key(["tiny_mc"], 2, data)
    path.write_text(json.dumps(rows + rows[:1]))
    assert mixture_key(["tiny_mc"], 2, data) != before


def test_a_cached_mixture_equals_a_fresh_build(tmp_path, eval_sets):
    cache = tmp_path / "mixtures"
    first = load_or_build_mixture(TWO, 12, SMALL_VENDI, eval_sets, tokenizer_id="tok-a", cache_dir=cache)
    key = mixture_key(TWO, 12, SMALL_VENDI, eval_sets)
    assert {p.name for p in (cache / key).iterdir()} == {ROWS_FILE, META_FILE}
    fresh = with_embedding_diversity(build_mixture(TWO, 12, SMALL_VENDI, eval_sets, tokenizer_id="tok-a"),
                                     SMALL_VENDI)
    cached = load_or_build_mixture(TWO, 12, SMALL_VENDI, eval_sets, tokenizer_id="tok-a", cache_dir=cache)
    for mix in (first, cached):
        assert mix.rows == fresh.rows and mix.fingerprint == fresh.fingerprint and mix.stats == fresh.stats
    assert cached.stats.vendi is not None and cached.stats.vendi_sample == 16
    # the tokenizer changes the fingerprint only: same entry, fingerprint as a fresh build's
    other = load_or_build_mixture(TWO, 12, SMALL_VENDI, eval_sets, tokenizer_id="tok-b", cache_dir=cache)
    assert other.fingerprint == build_mixture(TWO, 12, SMALL_VENDI, eval_sets, tokenizer_id="tok-b").fingerprint
    assert other.fingerprint != cached.fingerprint and len(list(cache.iterdir())) == 1


def _sweep(tmp_path, **data) -> SweepSpec:
    return SweepSpec.model_validate({
        "name": "cache", "output_dir": str(tmp_path),
        "data": {"per_subtask": 6, "embedding_diversity_sample": 0, **data},
        "eval": {"per_subtask": 2},
        "grid": {"domains": {"sets": [["concept"], ["concept", "reasoning"]]}, "lora_rank": [4, 8],
                 "seed": [0, 1]},
    })


def test_the_driver_builds_each_distinct_mixture_once(tmp_path):
    from harness.sweep.driver import _prepare_mixtures, planned_trials

    spec = _sweep(tmp_path)
    trials = planned_trials(spec)  # baseline + 2 data sets x 2 ranks x 2 seeds
    cache = spec.results_dir / "mixtures"
    _prepare_mixtures(trials, spec.results_dir)
    assert len(list(cache.iterdir())) == 2
    again = prepare_mixtures(trials, cache)
    assert again.built == [] and len(again.cached) == 2
    # a trial then reads the entry the driver wrote, without writing it again
    t = next(t for t in trials if t.kind == "trial")
    entry = cache / mixture_key(t.subtasks, t.volume, t.data, build_eval_sets(t.eval))
    stamp = (entry / META_FILE).stat().st_mtime_ns
    mix = load_or_build_mixture(t.subtasks, t.volume, t.data, build_eval_sets(t.eval), cache_dir=cache)
    assert (entry / META_FILE).stat().st_mtime_ns == stamp and len(mix.rows) == 6 * len(t.subtasks)


@pytest.mark.parametrize("damage", ["meta", "rows"])
def test_a_broken_entry_is_rebuilt_with_a_warning(tmp_path, eval_sets, caplog, damage):
    cache = tmp_path / "mixtures"
    good = load_or_build_mixture(TWO, 8, NO_VENDI, eval_sets, cache_dir=cache)
    entry = cache / mixture_key(TWO, 8, NO_VENDI, eval_sets)
    if damage == "meta":
        (entry / META_FILE).write_text('{"version": 1, "key": ')  # bad JSON
    else:
        text = (entry / ROWS_FILE).read_text()
        (entry / ROWS_FILE).write_text(text[: len(text) // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="harness.data.cache"):
        again = load_or_build_mixture(TWO, 8, NO_VENDI, eval_sets, cache_dir=cache)
    assert again.rows == good.rows and again.fingerprint == good.fingerprint
    assert str(entry) in caplog.text and "rebuilding" in caplog.text
    assert json.loads((entry / META_FILE).read_text())["n_rows"] == 16  # the entry is whole again
    caplog.clear()
    load_or_build_mixture(TWO, 8, NO_VENDI, eval_sets, cache_dir=cache)
    assert "rebuilding" not in caplog.text


def test_writes_leave_no_temporary_files(tmp_path, eval_sets):
    cache = tmp_path / "mixtures"
    load_or_build_mixture(TWO, 8, NO_VENDI, eval_sets, cache_dir=cache)
    leftovers = [p for _, _, files in os.walk(cache) for p in files if p.endswith(".tmp")]
    assert leftovers == []


def test_data_show_prints_the_vendi_score_and_fills_an_existing_cache(tmp_path):
    from harness.cli import app

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: show\noutput_dir: {tmp_path}\ndata: {{per_subtask: 4, embedding_diversity_sample: 8}}\n"
                     "grid: {domains: {sets: [[concept]]}, lora_rank: [4, 8]}\n")
    (tmp_path / "show").mkdir()
    result = CliRunner().invoke(app, ["data", "show", str(sweep)])
    assert result.exit_code == 0, result.output
    cells = [line for line in result.output.splitlines() if line.startswith("cell ")]
    assert len(cells) == 2 and all("vendi " in line and "(8 rows)" in line for line in cells)
    assert len(list((tmp_path / "show" / "mixtures").iterdir())) == 1  # two ranks, one mixture
