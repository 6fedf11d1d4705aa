"""The `harness` command: plan | sweep | trial | score | analyze | data.

    harness plan sweeps/smoke.yaml [--set train.steps=50] [--json]
    harness plan sweeps/smoke.yaml --pilot results/smoke [--effect 0.01]   # power from a pilot
    harness sweep sweeps/smoke.yaml [--resume] [--address auto]
    harness trial sweeps/smoke.yaml --index 3          # one trial, no Ray (debugging, GPU checks)
    harness score BENCH.json RESPONSES.jsonl [--json]
    harness analyze results/smoke [--compare results/other] [--capacity adapter_params] [--by-family]
    harness analyze results/smoke --wandb               # + the analysis as a W&B run
    harness data show sweeps/smoke.yaml

Bad input (an InputError) prints one clear message and exits 2; nothing is launched.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from harness.errors import HarnessError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Diversity x capacity sweeps for e-commerce LLM domain adaptation.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect mixtures and generate training data.")
app.add_typer(data_app, name="data")

SetOpt = typer.Option(None, "--set", help="Override a field: --set train.steps=50 (repeatable).")


def _load(sweep_file: Path, overrides: Optional[list[str]]):
    from harness.spec.load import load_sweep

    return load_sweep(sweep_file, overrides or [])


@app.command()
def plan(sweep_file: Path, set_: Optional[list[str]] = SetOpt,
         as_json: bool = typer.Option(False, "--json", help="Machine-readable trial list."),
         pilot: Optional[Path] = typer.Option(None, help="A pilot sweep's results: estimate its noise "
                                              "and print what this design can detect."),
         effect: Optional[float] = typer.Option(None, help="With --pilot: seeds per cell needed to "
                                                "detect this interaction with 80% power."),
         diversity: str = typer.Option("n_domains", help="With --pilot: the diversity factor."),
         capacity: str = typer.Option("lora_rank", help="With --pilot: the capacity factor (log2).")):
    """Expand a sweep into trials and validate it, without running anything."""
    from harness.spec.estimate import format_count, plan_summary
    from harness.sweep.driver import planned_trials, unplanned_note, unplanned_records
    from harness.sweep.preflight import check_evaluation

    spec = _load(sweep_file, set_)
    trials = planned_trials(spec)
    eval_sets = check_evaluation(spec)
    summary = plan_summary(spec, trials, eval_rows=sum(len(rows) for rows in eval_sets.values()))
    power = _plan_power(spec, trials, pilot, effect, diversity, capacity)
    summary["unplanned_records"] = len(unplanned_records(spec.results_dir, trials))
    note = unplanned_note(summary["unplanned_records"], spec.results_dir)
    if as_json:
        typer.echo(json.dumps({"trials": [{"trial_id": t.trial_id, "cell_id": t.cell_id,
                                           "kind": t.kind, "factors": t.factors} for t in trials],
                               "summary": summary, **({"power": power.to_dict()} if power else {})},
                              indent=2))
        return
    typer.echo(f"sweep {spec.name}: {summary['trials']} trial(s) in {summary['cells']} cell(s) x "
               f"{summary['seeds_per_cell']} seed(s), base model {spec.base_model}, "
               f"results in {spec.results_dir}/")
    for i, t in _shown_trials(trials):
        if t is None:
            typer.echo(f"  ... {i} more trial(s) not listed (harness plan --json lists every trial)")
            continue
        params = t.capacity.params if t.capacity else None
        extra = f"  ({format_count(params)} adapter params)" if params is not None else ""
        typer.echo(f"  [{i:3d}] {t.trial_id}  cell {t.cell_id}  {t.name}{extra}")
    for row in summary.get("capacity", []):
        typer.echo("  capacity " + _capacity_line(row))
    if "base_params" in summary:
        typer.echo(f"estimates ({summary['device']}): base {format_count(summary['base_params'])} "
                   f"params; ~{summary['gpu_memory_gib_per_trial']} GiB GPU memory per "
                   f"trial; ~{summary['trial_seconds']} s per trial; {summary['serial_hours']} h serial; "
                   f"{summary['gpu_hours']} GPU-h")
    for gpus, hours in summary.get("wall_hours", {}).items():
        typer.echo(f"  wall clock on {gpus} H200 GPU(s) ({_gpu_share(spec)} per trial): ~{hours} h")
    for warning in summary["warnings"]:
        typer.echo(f"warning: {warning}")
    if note:
        typer.echo(f"note: {note}")
    if power is not None:
        from harness.analysis.power import format_plan

        typer.echo("\n".join(format_plan(power, diversity, capacity)))


def _plan_power(spec, trials, pilot: Optional[Path], effect: Optional[float], diversity: str,
                capacity: str):
    """`plan --pilot`: what the planned trials can detect, given the pilot's noise (or None)."""
    if pilot is None:
        if effect is not None:
            raise InputError("--effect needs --pilot RESULTS_DIR: the noise comes from a pilot "
                             "sweep's records")
        return None
    import pandas as pd

    from harness.analysis.power import estimate_noise, plan_power

    planned = pd.DataFrame([{**t.factors, "cell_id": t.cell_id} for t in trials if t.kind == "trial"])
    return plan_power(planned, estimate_noise(pilot), diversity, capacity, effect=effect,
                      eval_rows=spec.eval.per_subtask)


PLAN_LIST_HEAD, PLAN_LIST_TAIL = 40, 10  # a big plan lists its first and last trials, not 10^5 lines


def _shown_trials(trials: list) -> list[tuple[int, object]]:
    """(index, trial) to list; one (count left out, None) marks the gap in a big plan."""
    if len(trials) <= PLAN_LIST_HEAD + PLAN_LIST_TAIL:
        return list(enumerate(trials))
    tail_start = len(trials) - PLAN_LIST_TAIL
    return ([(i, trials[i]) for i in range(PLAN_LIST_HEAD)] + [(tail_start - PLAN_LIST_HEAD, None)]
            + [(i, trials[i]) for i in range(tail_start, len(trials))])


def _gpu_share(spec) -> str:
    gpu = spec.resources.gpu
    return "1 GPU" if gpu == "auto" else f"{gpu:g} GPU"


def _capacity_line(row: dict) -> str:
    from harness.spec.estimate import format_count

    if row["params"] is None:
        return f"{row['capacity']}: parameters unknown (custom target modules)"
    line = f"{row['capacity']}: {format_count(row['params'])} trainable params, {row['adapter_mib']} MiB adapter"
    if row.get("budget"):
        line += (f"; matched to budget {row['budget']} ({format_count(row['budget_params'])}): "
                 f"{row['off_budget_pct']:+.1f}%")
    return line


@app.command()
def sweep(sweep_file: Path, set_: Optional[list[str]] = SetOpt,
          resume: bool = typer.Option(False, help="Run only trials without a successful record."),
          address: Optional[str] = typer.Option(None, help="Ray cluster: 'auto' or ray://host:port."),
          num_cpus: Optional[int] = typer.Option(None, help="CPUs for a local Ray (default: all).")):
    """Run every trial of a sweep on Ray Tune, then write scores.parquet."""
    from harness.sweep.driver import run_sweep, unplanned_note

    spec = _load(sweep_file, set_)
    outcome = run_sweep(spec, address=address, resume=resume, num_cpus=num_cpus)
    typer.echo(f"\nsweep {spec.name}: ran {outcome.ran}, already done {outcome.skipped}, "
               f"failed {len(outcome.failed)}, stopped early {len(outcome.cancelled)}")
    if outcome.unplanned:
        typer.echo("note: " + unplanned_note(outcome.unplanned, outcome.results_dir))
    typer.echo(f"records: {outcome.results_dir}/trials/   table: {outcome.results_dir}/scores.parquet")
    typer.echo(f"next: harness analyze {outcome.results_dir}")


@app.command()
def trial(sweep_file: Path, index: int = typer.Option(0, help="Trial index from `harness plan`."),
          set_: Optional[list[str]] = SetOpt,
          device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: auto)."),
          output: Optional[Path] = typer.Option(None, help="Results directory (default: the sweep's)."),
          ranks: Optional[int] = typer.Option(None, help="Data-parallel processes (default: resources.ranks, "
                                              "or one per GPU of resources.gpu).")):
    """Run one trial of a sweep in this process (plus its data-parallel ranks), without Ray."""
    from harness.model import resolve_model_path
    from harness.sweep.driver import planned_trials
    from harness.trial.run import run_trial

    spec = _load(sweep_file, set_)
    trials = planned_trials(spec)
    if not 0 <= index < len(trials):
        raise typer.BadParameter(f"--index {index}: the sweep has trials 0..{len(trials) - 1}")
    import torch

    ranks = ranks or spec.resources.ranks_per_trial()
    torch.set_num_threads(max(int(spec.resources.cpu) // ranks, 1))  # as a Ray worker would
    resolve_model_path(spec.base_model)
    record = run_trial(trials[index], output or spec.results_dir, device=device, ranks=ranks, wandb=spec.wandb)
    typer.echo(json.dumps({"trial_id": record.run.trial_id, "status": record.train.status.value,
                           "reason": record.train.reason,
                           "overall": {k: v.overall for k, v in record.eval.items()},
                           "tokens_per_s": record.train.tokens_per_s,
                           "peak_mem_mb": record.train.peak_mem_mb}, indent=2))
    if not record.ok:
        raise typer.Exit(1)


@app.command()
def score(bench: Path, responses: Path,
          as_json: bool = typer.Option(False, "--json", help="Print the score document as JSON."),
          skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed benchmark rows "
                                        "(each is reported on stderr) instead of stopping.")):
    """Score model responses against a ShopBench-format file with the organisers' metrics."""
    from harness.evaluate.score_cli import format_report, score_files

    report = score_files(bench, responses, skip_bad=skip_bad)
    if as_json:
        for message in report.skipped:  # the JSON document keeps its exact shape; skips go to stderr
            typer.echo(f"skipped: {message}", err=True)
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(format_report(report))


@app.command()
def analyze(results_dir: Path,
            compare: Optional[Path] = typer.Option(None, help="A second sweep's results to compare."),
            diversity: str = typer.Option("n_domains", help="n_domains, n_subtasks or div_entropy."),
            capacity: str = typer.Option("lora_rank", help="Capacity column, on a log2 scale: "
                                         "lora_rank, adapter_params, trainable_params or budget_size."),
            by_family: Optional[bool] = typer.Option(
                None, "--by-family/--no-by-family", help="Fit the interaction per capacity family and "
                "test whether it differs (default: on when the records hold more than one family)."),
            family_size: Optional[str] = typer.Option(
                None, help="Size axis of the per-family fits (default: budget_size when every trial "
                "was matched to a parameter budget, else --capacity)."),
            wandb: Optional[bool] = typer.Option(
                None, "--wandb/--no-wandb", help="Also log the analysis as one W&B run in the "
                "sweep's project and group (tables, figures); default: the sweep's wandb.analysis."),
            wandb_mode: Optional[str] = typer.Option(None, help="offline, online or disabled "
                                                     "(default: the sweep's wandb.mode)."),
            wandb_project: Optional[str] = typer.Option(None, help="Default: the sweep's.")):
    """Write report.md, summary.json and figures/ for a sweep's results (and, with --wandb, log
    them to W&B: a W&B failure is reported and leaves them written)."""
    from harness.analysis import analyze as run_analysis

    summary = run_analysis(results_dir, compare=compare, diversity=diversity, capacity=capacity,
                           by_family=by_family, family_size=family_size)
    typer.echo(f"report: {results_dir / 'report.md'}")
    if summary.families is not None and summary.families["differs"] is not None:
        verdict = "differs" if summary.families["differs"] else "shows no evidence of differing"
        typer.echo(f"interaction by capacity family: {verdict} between "
                   f"{', '.join(summary.families['fits'])} (see report)")
    from harness.analysis.wandb_log import analysis_run_wanted, log_analysis

    wanted = wandb if wandb is not None else analysis_run_wanted(results_dir)
    if wanted:  # after the report is written: nothing W&B does can lose it
        outcome = log_analysis(results_dir, mode=wandb_mode, project=wandb_project)
        typer.echo(outcome.message(), err=not outcome.ok)
    return summary


@data_app.command("show")
def data_show(sweep_file: Path, set_: Optional[list[str]] = SetOpt):
    """Print each cell's mixture: rows per subtask and diversity measures (the Vendi score embeds a
    sample of each mixture; --set data.embedding_diversity_sample=0 skips it). Reads and fills the
    sweep's mixture cache (<results>/mixtures/) when the results directory exists."""
    from harness.data.cache import load_or_build_mixture, mixture_key
    from harness.data.mixture import build_eval_sets
    from harness.spec.expand import expand_trials

    spec = _load(sweep_file, set_)
    eval_sets = build_eval_sets(spec.eval, spec.data)
    cache_dir = spec.results_dir / "mixtures" if spec.results_dir.is_dir() else None
    seen, mixtures = set(), {}
    for t in expand_trials(spec):
        if t.cell_id in seen:
            continue
        seen.add(t.cell_id)
        key = mixture_key(t.subtasks, t.volume, t.data, eval_sets)  # ranks share a mixture: build once
        if key not in mixtures:
            mixtures[key] = load_or_build_mixture(t.subtasks, t.volume, t.data, eval_sets, cache_dir=cache_dir)
        mix = mixtures[key]
        st = mix.stats
        vendi = f"vendi {st.vendi:.2f} ({st.vendi_sample} rows), " if st.vendi is not None else ""
        typer.echo(f"cell {t.cell_id} {t.name.rsplit('-s', 1)[0]}: {len(mix.rows)} rows, "
                   f"{st.n_domains} domains, {st.n_subtasks} subtasks, entropy {st.entropy_bits:.3f} bits, "
                   f"{vendi}contaminated removed {st.contaminated_removed}, fingerprint {mix.fingerprint}")
        for sub, n in st.examples.items():
            typer.echo(f"    {sub:32s} {n}")


@data_app.command("generate")
def data_generate(spec_file: Path, set_: Optional[list[str]] = SetOpt,
                  as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Generate training rows for a subtask with an LLM (resumable; see harness.tasks.generate)."""
    from harness.tasks.generate import generate_main

    raise typer.Exit(generate_main(spec_file, set_ or [], as_json=as_json))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except HarnessError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or "a results file"
        typer.echo(f"error: no space left on the device writing {where}: free some space, or point "
                   "output_dir at a disk with room, and run the command again (files are written "
                   "atomically: what was written before is intact and no partial file is left)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
