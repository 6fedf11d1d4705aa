"""Load one sweep's records and flatten them into the tables the analysis works on.

Records are the source of truth (see harness.results); everything here is derived from them, so the
analysis never depends on scores.parquet being up to date. Nothing here imports torch or ray.

    sweep = load_results(Path("results/smoke"))
    trials = trial_table(sweep.trials, eval_set="builtin:synthetic-heldout")
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import InputError, unknown_name_message
from harness.results import TrialRecord, load_records, score_rows

log = logging.getLogger(__name__)

# Train fields copied onto the per-trial table (capacity can be e.g. trainable_params).
TRAIN_COLUMNS = ("steps", "final_loss", "eval_loss", "wall_s", "tokens_per_s", "trainable_params",
                 "adapter_bytes")
FAMILY = "capacity_family"  # lora | dora | multi_lora | mole; None for the baseline
BUDGET_SIZE = "budget_size"  # capacity_budget as a number (see budget_size)


@dataclass
class LoadedSweep:
    """One sweep's records, split by kind, with every problem met while reading them."""

    results_dir: Path
    sweep: str
    trials: list[TrialRecord]  # kind == "trial", any status
    baselines: list[TrialRecord]  # kind == "baseline", any status
    spec: dict[str, Any] = field(default_factory=dict)  # sweep.yaml as a plain dict, if present
    warnings: list[str] = field(default_factory=list)

    @property
    def successful(self) -> list[TrialRecord]:
        return [r for r in self.trials if r.ok]

    @property
    def failed(self) -> list[TrialRecord]:
        return [r for r in self.trials if not r.ok]


def load_results(results_dir: Path) -> LoadedSweep:
    """Read results_dir; InputError when there is nothing readable, warnings for partial problems.

    Records from another sweep are set aside (with a warning) rather than mixed in: averaging two
    sweeps' trials would silently blend different base models or data.
    """
    results_dir = Path(results_dir)
    records, problems = _read_all(results_dir)
    spec = _read_spec(results_dir)
    sweep, foreign = _pick_sweep(records, spec.get("name"))
    warnings = [f"unreadable record skipped: {p}" for p in problems]
    for problem in problems:  # on the terminal too, not only in report.md
        log.warning("skipped unreadable record %s", problem)
    if foreign:
        warnings.append(_foreign_message(foreign, sweep))
    mine = [r for r in records if r.run.sweep == sweep]
    return LoadedSweep(
        results_dir=results_dir,
        sweep=sweep,
        trials=[r for r in mine if r.run.kind != "baseline"],
        baselines=[r for r in mine if r.run.kind == "baseline"],
        spec=spec,
        warnings=warnings,
    )


def _read_all(results_dir: Path) -> tuple[list[TrialRecord], list[str]]:
    if not results_dir.is_dir():
        raise InputError(f"{results_dir}: no such results directory (expected results/<sweep>/)")
    records, problems = load_records(results_dir)
    if records:
        return records, problems
    if problems:
        listed = "\n  ".join(problems)
        raise InputError(f"{results_dir}: none of the trial records could be read:\n  {listed}")
    raise InputError(
        f"{results_dir}: no trial records found (expected {results_dir}/trials/*.json or "
        f"{results_dir}/baseline/*.json); run `harness sweep SWEEP.yaml` first, or point "
        "`harness analyze` at a results/<sweep> directory"
    )


def _read_spec(results_dir: Path) -> dict[str, Any]:
    """sweep.yaml as a plain dict; the analysis only shows it, so a bad file is not fatal."""
    path = results_dir / "sweep.yaml"
    if not path.is_file():
        return {}
    try:
        import yaml

        loaded = yaml.safe_load(path.read_text())
    except Exception:  # noqa: BLE001 - display-only input
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _pick_sweep(records: list[TrialRecord], spec_name: str | None) -> tuple[str, Counter]:
    """The sweep to analyse (the spec's name if it has records, else the commonest) and the rest."""
    counts = Counter(r.run.sweep for r in records)
    if spec_name in counts:
        chosen = spec_name
    else:
        chosen = sorted(counts, key=lambda name: (-counts[name], name))[0]
    del counts[chosen]
    return chosen, counts


def _foreign_message(foreign: Counter, sweep: str) -> str:
    others = ", ".join(f"{name!r} ({n} records)" for name, n in sorted(foreign.items()))
    return (
        f"records from other sweeps were left out: {others}; only sweep {sweep!r} is analysed. "
        "Keep each sweep in its own results directory and use --compare to set two side by side."
    )


# ---------------------------------------------------------------------------------------------
# Tables


def eval_sets(records: list[TrialRecord]) -> list[str]:
    """Evaluation-set names present in successful records, sorted."""
    return sorted({name for r in records if r.ok for name in r.eval})


def choose_eval_set(records: list[TrialRecord], wanted: str | None) -> str | None:
    """The set to analyse: `wanted` (checked) or, by default, the first name in sorted order."""
    names = eval_sets(records)
    if wanted is None:
        return names[0] if names else None
    if wanted not in names:
        raise InputError(unknown_name_message("eval set", wanted, names or ["(none)"]))
    return wanted


def record_factors(record: TrialRecord) -> dict[str, Any]:
    """run.factors with the capacity keys every record is analysed by, and `budget_size`.

    Records written before capacity families lack capacity_family, capacity, adapter_params and
    capacity_budget; they were all plain LoRA, so they read as family "lora", label "lora-r<rank>",
    no budget, and adapter_params = the measured train.trainable_params (the same count). A newer
    record whose adapter_params is None (parameters not countable from the shape) gets the measured
    count too, so `capacity="adapter_params"` works on every record that trained.
    """
    factors = dict(record.run.factors)
    trial = record.run.kind != "baseline"
    rank = factors.get("lora_rank")
    factors.setdefault(FAMILY, "lora" if trial else None)
    factors.setdefault("capacity", f"lora-r{rank}" if trial and rank else None)
    factors.setdefault("capacity_budget", None)
    if factors.get("adapter_params") is None:
        measured = record.train.trainable_params
        factors["adapter_params"] = measured if measured or not trial else None
    factors[BUDGET_SIZE] = budget_size(factors["capacity_budget"])
    return factors


def budget_size(label: Any) -> int | None:
    """A match_params budget label as a number: 'r16' -> 16 (a plain-LoRA rank), '400000' -> 400000.

    Only log2 differences enter the fits, and plain LoRA's parameters are proportional to its rank,
    so 'r8' -> 'r16' is one doubling whichever unit is used; budget_kinds says when a sweep mixes
    the two.
    """
    text = str(label) if label is not None else ""
    if text[:1] == "r" and text[1:].isdigit():
        return int(text[1:])
    return int(text) if text.isdigit() else None


def budget_kinds(labels: Any) -> set[str]:
    """{'rank'} for 'r<k>' budgets, {'params'} for parameter counts; both when a sweep mixes."""
    return {"rank" if str(v).startswith("r") else "params" for v in labels if not pd.isna(v)}


def _flat_factors(record: TrialRecord) -> dict[str, Any]:
    # Lists become "a+b" so they group in pandas, as in scores.parquet.
    return {
        k: "+".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        for k, v in record_factors(record).items()
    }


def record_row(record: TrialRecord) -> dict[str, Any]:
    """One record's ids, factors (capacity keys filled), diversity measures and train fields."""
    row = {"trial_id": record.run.trial_id, "cell_id": record.run.cell_id,
           "kind": record.run.kind, "sweep": record.run.sweep, "status": record.train.status.value}
    row.update(_flat_factors(record))
    row.update({f"div_{k}": v for k, v in record.data.diversity.items()})
    row.update({k: getattr(record.train, k) for k in TRAIN_COLUMNS})
    return row


def _overall(record: TrialRecord, eval_set: str) -> float | None:
    """The trial's overall score: the record's value, else the mean of its track scores."""
    result = record.eval.get(eval_set)
    if result is None:
        return None
    if result.overall is not None:
        return result.overall
    tracks = list(result.tracks.values())
    return sum(tracks) / len(tracks) if tracks else None


def trial_table(records: list[TrialRecord], eval_set: str | None) -> pd.DataFrame:
    """One row per successful record scored on eval_set: factors, diversity, train, `score`."""
    rows = []
    for record in records:
        score = _overall(record, eval_set) if record.ok and eval_set else None
        if score is not None:
            rows.append({**record_row(record), "eval_set": eval_set, "score": float(score)})
    return pd.DataFrame(rows)


def track_table(records: list[TrialRecord], eval_set: str | None) -> pd.DataFrame:
    """One row per successful record x track on eval_set, the track score in `score`."""
    rows = []
    for record in records:
        result = record.eval.get(eval_set) if record.ok and eval_set else None
        for track, score in (result.tracks.items() if result else ()):
            rows.append({**record_row(record), "eval_set": eval_set, "track": str(track),
                         "score": float(score)})
    return pd.DataFrame(rows)


def task_table(records: list[TrialRecord], eval_set: str | None) -> pd.DataFrame:
    """One row per successful record x task on eval_set (the scores.parquet rows, filtered)."""
    rows = [{**row, **_flat_factors(r)} for r in records for row in score_rows(r)
            if row["eval_set"] == eval_set]
    return pd.DataFrame(rows)


def failed_table(records: list[TrialRecord]) -> pd.DataFrame:
    """Failed and cancelled trials with their factors and reason, for the report's failure list."""
    rows = [{**record_row(r), "reason": r.train.reason or "(no reason recorded)"}
            for r in records if not r.ok]
    return pd.DataFrame(rows)
