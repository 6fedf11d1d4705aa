"""The analysis as one W&B run beside the sweep's trials: tables, figures and headline numbers.

    harness analyze results/smoke --wandb                  # the sweep's wandb: project and mode
    # or in the sweep: wandb: {project: divcap, mode: offline, analysis: true}
    wandb sync --yes results/smoke/wandb/offline-run-*     # offline runs: trials and analysis

    from harness.analysis.wandb_log import log_analysis
    outcome = log_analysis(Path("results/smoke"))          # after analyze(); never raises

It reads what analyze() wrote, summary.json and the figures it names, so the run shows exactly what
report.md shows, and a W&B failure cannot touch them: they are on disk before W&B is imported.

The run: id `<sweep>-analysis` (tracking.wandb_run_id), group = the sweep (the trials' group),
job type and tag "analysis", in the project, entity and mode of the sweep's `wandb:` block.
WANDB_MODE overrides the sweep's mode, as for trials, and an explicit mode overrides both; a sweep
run with mode disabled gets an offline analysis run, since asking for one says to log. Everything
goes in with one `log` call:

- tables (`table/<name>`): every list of rows in summary.json (cells, track_cells, marginal_gains,
  versus_baseline, trials, failed, interaction/params, interaction/anova, and any section a later
  analysis adds, e.g. calibration or power), `interactions` (the estimate with its CI overall and per
  track, one row each), `warnings`, and for a capacity-family comparison `family_interactions`
  (one row per family), `family_interactions/differences` and `family_interactions/cells`;
- images (`figure/<name>`): every figure summary.json names (the report's figures);
- a chart (`chart/score_by_capacity`): cell means against capacity, one line per diversity level;
- summary scalars: `interaction/estimate`, `/ci_low`, `/ci_high`, `/p_value`, `/n_obs` (or
  `/reason` when it is not estimable), the same per track (`interaction/track/<track>/...`) and per
  family (`interaction/family/<family>/...`), `family/differs`, `baseline_score`, and the plain
  values of every other section as `<section>/<name>` (`counts/trials`, `calibration/fpr`, ...).

Re-running replaces rather than adds: the same id resumes the same run (its summary, which the
project page shows, is overwritten; online, each re-run adds one history step), and offline the
previous local copies of the run are removed once the new one is written, so `wandb sync` of the
folder uploads one analysis run (an offline run with a reused id is a new folder beside the old
one, and syncing both would upload the analysis twice into one run).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.tracking import wandb_mode, wandb_run_id

ANALYSIS = "analysis"  # the run's job type, tag and id suffix
# summary.json sections logged in their own way rather than as plain lists of rows.
OWN_TABLES = ("track_interactions", "family_interactions", "warnings", "figures")
# summary.json sections whose plain values are not logged as `<section>/<name>` summary scalars.
OWN_SCALARS = ("interaction", "track_interactions", "family_interactions", "figures")
FIT_SCALARS = ("estimate", "ci_low", "ci_high", "p_value", "n_obs", "reason")  # reason: why not estimable
DEFAULTS = {"project": "divcap", "entity": None, "mode": "offline", "init_timeout": 90.0}


@dataclass
class WandbOutcome:
    """What log_analysis did: the run, or why there is none (`error`)."""

    ok: bool
    mode: str
    run_id: str | None = None
    run_dir: Path | None = None
    error: str | None = None
    logged: list[str] = field(default_factory=list)  # keys of the tables, figures and chart
    missing_figures: list[str] = field(default_factory=list)

    def message(self) -> str:
        """One line for the CLI."""
        if not self.ok:
            return (f"W&B: the analysis was not logged ({self.error}); report.md and summary.json "
                    "are written")
        if self.mode == "disabled":
            return "W&B: disabled (mode disabled); nothing logged"
        where = f" in {self.run_dir}" if self.run_dir else ""
        missing = f"; figures not found: {', '.join(self.missing_figures)}" if self.missing_figures else ""
        return (f"W&B: analysis run {self.run_id} ({self.mode}{where}): {len(self.logged)} tables, "
                f"figures and charts{missing}")


def log_analysis(results_dir: Path, *, project: str | None = None, entity: str | None = None,
                 mode: str | None = None, init_timeout: float | None = None) -> WandbOutcome:
    """Log results_dir's analysis (summary.json + figures) as the sweep's analysis run.

    Unset settings come from sweep.yaml's `wandb:` block, then the harness defaults (project
    divcap, offline). Never raises: a missing summary.json, a missing wandb package or any W&B
    failure comes back as an outcome with ok=False and the reason.
    """
    results_dir = Path(results_dir)
    settings = {"mode": mode or "unknown"}
    try:
        settings = _settings(results_dir, project=project, entity=entity, mode=mode,
                             init_timeout=init_timeout)
        doc = _read_summary(results_dir)
        if settings["mode"] == "disabled":
            return WandbOutcome(ok=True, mode="disabled")
        return _log(results_dir, doc, settings)
    except Exception as exc:  # noqa: BLE001 - W&B must never cost the local results
        return WandbOutcome(ok=False, mode=settings["mode"], error=_one_line(exc))


def analysis_run_wanted(results_dir: Path) -> bool:
    """Whether the sweep asked for the analysis run (wandb.analysis: true in its sweep.yaml)."""
    return _sweep_wandb_block(Path(results_dir)).get("analysis") is True


def _one_line(exc: Exception) -> str:
    """`Type: message` on one line (pydantic and wandb errors span several)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _settings(results_dir: Path, *, mode: str | None, **given: Any) -> dict[str, Any]:
    """Given values, else sweep.yaml's wandb: block, else DEFAULTS. The mode: as given, else
    WANDB_MODE, else the sweep's, where a sweep run with mode disabled gets an offline analysis run
    (asking for one says to log)."""
    block = _sweep_wandb_block(results_dir)
    out = {k: given[k] if given.get(k) is not None else block.get(k, default)
           for k, default in DEFAULTS.items() if k != "mode"}
    swept = str(block.get("mode", DEFAULTS["mode"]))
    out["mode"] = mode or wandb_mode("offline" if swept == "disabled" else swept)
    return out


def _sweep_wandb_block(results_dir: Path) -> dict[str, Any]:
    """sweep.yaml's wandb: block, or {} when there is none or it cannot be read (the defaults)."""
    import yaml

    try:
        spec = yaml.safe_load((results_dir / "sweep.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    block = spec.get("wandb") if isinstance(spec, dict) else None
    return block if isinstance(block, dict) else {}


def _read_summary(results_dir: Path) -> dict[str, Any]:
    path = results_dir / "summary.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not found; run `harness analyze {results_dir}` first") from None


def _log(results_dir: Path, doc: dict[str, Any], settings: dict[str, Any]) -> WandbOutcome:
    import wandb

    sweep = str(doc["sweep"])
    run_id = wandb_run_id(sweep, ANALYSIS)
    payload, missing = _payload(wandb, doc, results_dir)
    run = wandb.init(
        project=settings["project"], entity=settings["entity"], mode=settings["mode"], id=run_id,
        resume="allow", group=sweep, job_type=ANALYSIS, tags=[sweep, ANALYSIS],
        name=f"{sweep}-{ANALYSIS}", config=_config(doc), dir=str(results_dir),
        reinit="finish_previous",
        settings=wandb.Settings(silent=True, console="off", init_timeout=settings["init_timeout"],
                                login_timeout=settings["init_timeout"]))
    try:
        run.config.update(_config(doc), allow_val_change=True)  # a resumed run: replace, not keep
        run.log(payload)
        run.summary.update(_scalars(doc))
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    if settings["mode"] == "offline":
        _remove_older_copies(results_dir / "wandb", run_id, keep=run_dir)
    return WandbOutcome(ok=True, mode=settings["mode"], run_id=run_id, run_dir=run_dir,
                        logged=sorted(payload), missing_figures=missing)


def _config(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("sweep", "results_dir", "eval_set", "diversity", "capacity", "log2_capacity")
    return {**{k: doc.get(k) for k in keys}, "kind": ANALYSIS}


def _payload(wandb: Any, doc: dict[str, Any], results_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Every table, figure and chart, keyed as in the module docstring; and figures not found."""
    payload = {f"table/{name}": _table(wandb, rows) for name, rows in analysis_tables(doc).items()}
    missing = []
    for name, relative in (doc.get("figures") or {}).items():
        path = results_dir / relative
        if path.is_file():
            payload[f"figure/{name}"] = wandb.Image(str(path), caption=name)
        else:
            missing.append(str(relative))
    chart = _capacity_chart(wandb, doc)
    if chart is not None:
        payload["chart/score_by_capacity"] = chart
    return payload, missing


def analysis_tables(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """summary.json as named tables (lists of rows), empty ones left out."""
    tables = {"interactions": interaction_rows(doc),
              "warnings": [{"warning": w} for w in doc.get("warnings") or []]}
    tables.update(_family_tables(doc.get("family_interactions")))
    for key, value in doc.items():
        if key not in OWN_TABLES:
            tables.update(_row_lists(key, value))
    return {name: rows for name, rows in tables.items() if rows}


def _row_lists(path: str, value: Any, depth: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Lists of rows (dicts) in value, found down to two levels, keyed by their path."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return {path: value}
    if isinstance(value, dict) and depth < 2:
        found: dict[str, list[dict[str, Any]]] = {}
        for key, item in value.items():
            found.update(_row_lists(f"{path}/{key}", item, depth + 1))
        return found
    return {}


def interaction_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The interaction estimate with its CI: overall, then one row per track."""
    fits = {"overall": doc.get("interaction")} | dict(doc.get("track_interactions") or {})
    return [_fit_row("scope", scope, fit) for scope, fit in fits.items() if fit]


def _fit_row(label: str, name: str, fit: dict[str, Any]) -> dict[str, Any]:
    row = {label: name, **{k: v for k, v in fit.items() if not isinstance(v, (list, dict))}}
    low, high = fit.get("ci_low"), fit.get("ci_high")
    row["excludes_zero"] = None if low is None or high is None else bool(low > 0 or high < 0)
    return row


def _family_tables(fam: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    if not fam:
        return {}
    fits = [_fit_row("family", name, fit) for name, fit in (fam.get("fits") or {}).items()]
    return {"family_interactions": fits,
            "family_interactions/differences": list(fam.get("differences") or []),
            "family_interactions/cells": list(fam.get("cells") or [])}


def _table(wandb: Any, rows: list[dict[str, Any]]) -> Any:
    """A wandb.Table of rows whose columns are the union of their keys, in first-seen order;
    nested values (lists, dicts) become JSON text so every cell is a plain value."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    data = [[_cell(row.get(c)) for c in columns] for row in rows]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _capacity_chart(wandb: Any, doc: dict[str, Any]) -> Any:
    """Cell means against capacity, one line per diversity level: the grouped line panel, ready."""
    cells, diversity, capacity = doc.get("cells") or [], doc.get("diversity"), doc.get("capacity")
    if not cells or not diversity or not capacity:
        return None
    rows = sorted(({capacity: c[capacity], diversity: str(c[diversity]), "mean": c["mean"]}
                   for c in cells), key=lambda r: (r[diversity], r[capacity]))
    return wandb.plot.line(_table(wandb, rows), capacity, "mean", stroke=diversity,
                           title=f"Mean overall score by {capacity}, one line per {diversity}")


def _scalars(doc: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers for the run summary and the runs table."""
    out: dict[str, Any] = {"baseline_score": doc.get("baseline_score")}
    for key, section in doc.items():  # counts, calibration, compute_budget, ... as <key>/<name>
        if isinstance(section, dict) and key not in OWN_SCALARS:
            out.update({f"{key}/{k}": v for k, v in section.items()
                        if isinstance(v, (int, float, str, bool))})
    out.update(_fit_scalars("interaction", doc.get("interaction")))
    for track, fit in (doc.get("track_interactions") or {}).items():
        out.update(_fit_scalars(f"interaction/track/{track}", fit))
    fam = doc.get("family_interactions") or {}
    for name, fit in (fam.get("fits") or {}).items():
        out.update(_fit_scalars(f"interaction/family/{name}", fit))
    if fam:
        out["family/differs"] = fam.get("differs")
    return {k: v for k, v in out.items() if v is not None}  # W&B keeps no nulls in a summary


def _fit_scalars(prefix: str, fit: dict[str, Any] | None) -> dict[str, Any]:
    return {f"{prefix}/{k}": fit.get(k) for k in FIT_SCALARS} if fit else {}


def _remove_older_copies(wandb_dir: Path, run_id: str, keep: Path) -> None:
    """Offline folders of this run other than `keep`. A folder is offline-run-<date>_<time>-<id>,
    with "-1" added when two start in the same second, so the run is told by its log file's name."""
    for folder in wandb_dir.glob("offline-run-*"):
        if (folder / f"run-{run_id}.wandb").exists() and folder.resolve() != keep.resolve():
            shutil.rmtree(folder, ignore_errors=True)
