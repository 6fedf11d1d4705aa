"""report.md: the analysis as a document someone can read without the code or the notebook.

Sections, in order: warnings (first, so they are not missed), what was run, base model vs trained,
the interaction, the interaction per capacity family (when there are several, or when asked),
marginal gains, the paper-style tables, per-track and per-task breakdowns, training
curves, failed trials, and the comparison with another sweep when asked for.
"""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from harness.analysis import noise, tables
from harness.analysis.compare import comparison_markdown
from harness.analysis.family import FamilyComparison
from harness.analysis.load import FAMILY
from harness.analysis.pipeline import Analysis
from harness.analysis.stats import ALPHA, frame_design
from harness.analysis.tables import DASH, fmt, fmt_ci, fmt_level, fmt_p, markdown_table


def render_report(a: Analysis, figures: dict[str, str] | None = None,
                  other: Analysis | None = None) -> str:
    """The whole report as markdown; figures maps a figure name to its path relative to it."""
    figures = figures or {}
    parts = [
        f"# Diversity x capacity analysis: `{a.sweep}`",
        _warnings(a), _what_was_run(a), _versus_baseline(a), _interaction(a, figures),
        _families(a, figures), _gains(a), _noise_and_budget(a), _ablations(a),
        _breakdowns(a, figures),
        _curves(figures), _failed(a),
    ]
    if other is not None:
        parts.append(f"## Comparison with `{other.sweep}`\n\n{comparison_markdown(a, other)}")
    return "\n\n".join(p for p in parts if p) + "\n"


def _figure(figures: dict[str, str], name: str, caption: str) -> str:
    return f"![{caption}]({figures[name]})" if name in figures else ""


def _warnings(a: Analysis) -> str:
    if not a.warnings:
        return ""
    return "## Warnings\n\n" + "\n".join(f"- {w}" for w in a.warnings)


def _what_was_run(a: Analysis) -> str:
    loaded = a.loaded
    status = Counter(r.train.status.value for r in loaded.trials)
    cells = {r.run.cell_id for r in loaded.trials}
    per_cell = Counter(r.run.cell_id for r in loaded.successful)
    seeds = sorted({r.run.factors.get("seed") for r in loaded.trials}, key=_sort_key)
    sets = ", ".join(f"`{n}`" for n in a.versus_baseline.get("eval_set", []))
    lines = [
        "## What was run", "",
        f"- Sweep `{a.sweep}` from `{loaded.results_dir}`"
        + (f", base model `{_base_model(a)}`" if _base_model(a) else ""),
        f"- Trials: {len(loaded.trials)} "
        f"({', '.join(f'{n} {s}' for s, n in sorted(status.items()))}); "
        f"baseline records: {len(loaded.baselines)}",
        f"- Cells: {len(cells)}; seeds: {', '.join(map(str, seeds)) or DASH}; "
        f"successful seeds per cell: {_span([per_cell[c] for c in cells])}",
        f"- Analysed: eval set `{a.eval_set}`, diversity `{a.diversity}`, capacity "
        f"`{a.fit.capacity}`; score = overall (mean of track scores)",
        f"- Eval sets in the records: {sets or DASH} (pick one with `eval_set=`)",
    ]
    if a.families is not None:
        ref = a.families.reference
        lines.append(f"- Per capacity family: `score ~ {a.diversity} * {a.families.shown_size}` "
                     "within each family" + (f", differences against `{ref}`" if ref else ""))
    lines += [f"- {name}: {levels}" for name, levels in _factor_levels(a.trials)]
    return "\n".join(lines)


def _base_model(a: Analysis) -> str | None:
    """From sweep.yaml, else from any record's meta (trials record the model they loaded)."""
    if a.loaded.spec.get("base_model"):
        return str(a.loaded.spec["base_model"])
    found = {r.meta.get("base_model") for r in a.loaded.trials + a.loaded.baselines}
    found.discard(None)
    return ", ".join(sorted(map(str, found))) or None


def _span(values) -> str:
    values = list(values)
    if not values:
        return DASH
    return str(min(values)) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def _factor_levels(trials: pd.DataFrame) -> list[tuple[str, str]]:
    # subtasks lists are long; n_subtasks says enough
    names = ["domains", "n_domains", "n_subtasks", "volume", FAMILY, "capacity", "capacity_budget",
             "lora_rank", "lora_alpha"]
    levels = {n: [v for v in trials[n].unique() if not pd.isna(v)]
              for n in names if n in trials.columns}
    return [(n, ", ".join(map(fmt_level, sorted(values, key=_sort_key))))
            for n, values in levels.items() if values]


def _sort_key(value) -> tuple:
    # Numbers first in numeric order, then everything else (lists joined by "+", None) by length.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, len(str(value)), str(value))


def _versus_baseline(a: Analysis) -> str:
    head = "## Base model vs trained\n\n"
    if a.versus_baseline.empty:
        return head + "_No scores on any eval set._"
    rows = [[r.eval_set, fmt(r.get("baseline")), str(r.trials),
             fmt_ci(r.get("mean"), r.get("ci_low"), r.get("ci_high"), r.trials),
             str(r.get("best_cell", DASH)),
             fmt_ci(r.get("best_mean"), r.get("best_ci_low"), r.get("best_ci_high")),
             _above(r)] for _, r in a.versus_baseline.iterrows()]
    headers = ["eval set", "base model", "trials", "trained mean [95% CI]", "best cell",
               "best cell mean", "cells above base"]
    return head + markdown_table(headers, rows) + "\n\n" + _versus_sentence(a)


def _above(row: pd.Series) -> str:
    above = row.get("cells_above")
    return DASH if above is None or pd.isna(above) else f"{int(above)} of {int(row.cells)}"


def _versus_sentence(a: Analysis) -> str:
    rows = a.versus_baseline[a.versus_baseline.eval_set == a.eval_set]
    if rows.empty or a.baseline_score is None or a.trials.empty:
        return "No verdict: a baseline record and successful trials are both needed."
    r = rows.iloc[0]
    verdict = "beats" if r.cells_above == r.cells else (
        "partly beats" if r.cells_above else "does not clearly beat")
    return (f"On `{a.eval_set}`, training {verdict} the base model: {int(r.cells_above)} of "
            f"{int(r.cells)} cells lie above the base score {r.baseline:.3f} (whole 95% CI above, "
            f"or the mean where a cell has one seed); the trained mean is {r['mean']:.3f}.")


def _interaction(a: Analysis, figures: dict[str, str]) -> str:
    lines = ["## Interaction: does diversity help more at higher capacity?", "",
             interaction_sentence(a)]
    if a.fit.estimable:
        lines += ["", "Type II ANOVA:", "", _anova_table(a.fit.anova), "",
                  "Coefficients:", "", _params_table(a.fit.params)]
    lines += ["", _figure(figures, "interaction", "Interaction plot"),
              "", _figure(figures, "heatmap", "Cell means heatmap")]
    return "\n".join(lines).rstrip()


def interaction_sentence(a: Analysis) -> str:
    """The interaction estimate in one plain sentence, with what it does and does not show."""
    fit = a.fit
    if not fit.estimable:
        return f"The interaction could not be estimated: {fit.reason}."
    unit = "doubling of " + a.capacity if a.log2_capacity else "unit of " + a.capacity
    level = int(round((1 - ALPHA) * 100))
    head = (f"The score gain from one more unit of `{a.diversity}` changes by {fit.estimate:+.4f} "
            f"with every {unit} (interaction {fit.estimate:+.4f}, {level}% CI [{fit.ci_low:+.4f}, "
            f"{fit.ci_high:+.4f}], p = {fit.p_value:.3g}, {fit.n_obs} trials, "
            f"model `score ~ {a.diversity} * {fit.capacity}`).")
    if not fit.excludes_zero:
        return head + (" The CI covers zero: this sweep gives no evidence that the effect of "
                       "diversity depends on capacity (which is not evidence that it does not).")
    direction = "more" if fit.estimate > 0 else "less"
    return head + f" The CI excludes zero: here diversity helps {direction} at higher capacity."


def _families(a: Analysis, figures: dict[str, str]) -> str:
    """Each capacity family's own interaction, and whether they differ (harness.analysis.family)."""
    fam = a.families
    if fam is None:
        return ""
    note = f"Each family is fitted on its own trials (`score ~ {a.diversity} * {fam.shown_size}`)"
    if len(fam.differences):
        note += (f"; differences are against `{fam.reference}`, with Welch intervals (the fits are "
                 "independent and their residual variances need not be equal)")
    note += "."
    return "\n\n".join(p for p in [
        "## Interaction by capacity family", family_sentence(a), note, tables.family_table(fam),
        f"Mean overall score [95% t-CI over seeds] per family, `{a.diversity}` and `{fam.size}`:",
        tables.ablation_table(a.trials, [FAMILY, a.diversity], fam.size),
        _figure(figures, "families", "Interaction per capacity family"),
    ] if p)


def family_sentence(a: Analysis) -> str:
    """Each family's interaction in one line, then the verdict of the test that they differ."""
    fam = a.families
    if fam is None or not fam.fits:
        return "No capacity families to compare."
    per = "; ".join(f"`{name}` {tables.signed_ci(f.estimate, f.ci_low, f.ci_high)}"
                    if f.estimable else f"`{name}` not estimable ({f.reason})"
                    for name, f in fam.fits.items())
    head = f"Interaction of `{a.diversity}` with {fam.shown_size}, per family (95% CI): {per}."
    om = fam.omnibus
    reason = om.get("reason") or (None if fam.differs is not None else "the fits are exact, so "
                                  "there is no residual variance to test against")
    if reason:
        return head + f" Whether it differs between families cannot be tested: {reason}."
    test = (f"F({fmt_level(om['df_num'])}, {fmt_level(om['df_den'])}) = {om['F']:.2f}, "
            f"p = {om['p_value']:.3g}, test of `{a.diversity}:{fam.shown_size}:C({FAMILY})`")
    pairs = _pairs_excluding_zero(fam)
    if fam.differs:
        found = (f"Differences from `{fam.reference}` whose 95% CI excludes zero: {pairs}."
                 if pairs else f"No single family's difference from `{fam.reference}` has a "
                 "95% CI that excludes zero.")
        return head + f" The interaction differs between families ({test}). {found}"
    text = head + (f" No evidence that the interaction differs between families ({test}); "
                   "which is not evidence that it is the same.")
    if pairs:  # the F-test pools residual variance, the Welch intervals do not
        text += (f" Yet the Welch interval of {pairs} excludes zero: the F-test pools residual "
                 "variance across families and the Welch interval does not, so compare the "
                 "residual SDs in the table.")
    return text


def _pairs_excluding_zero(fam: FamilyComparison) -> str:
    """'`mole` − `lora` = -0.0315 [-0.0364, -0.0265]' for each difference whose CI excludes 0."""
    d = fam.differences
    which = d[(d.ci_low > 0) | (d.ci_high < 0)] if not d.empty else d
    return "; ".join(f"`{r.family}` − `{r.reference}` = "
                     f"{tables.signed_ci(r['diff'], r.ci_low, r.ci_high)}"
                     for _, r in which.iterrows())


def _anova_table(anova: pd.DataFrame) -> str:
    frame = anova.reset_index(names="term").rename(columns={"PR(>F)": "p"})
    return tables.frame_table(frame, {"df": fmt_level, "sum_sq": lambda v: fmt(v, 5),
                                      "F": lambda v: fmt(v, 2), "p": fmt_p})


def _params_table(params: pd.DataFrame) -> str:
    return tables.frame_table(params.reset_index(names="term"),
                              {c: lambda v: fmt(v, 4) for c in ("coef", "se", "ci_low", "ci_high")}
                              | {"p_value": fmt_p})


def _gains(a: Analysis) -> str:
    head = f"## Marginal gain per added `{a.diversity}` level\n\n"
    if a.gains.empty:
        return head + "_Needs at least two diversity levels._"
    cell_se = _cell_eval_se(a)
    rows = [[tables.level_label(a.capacity, g[a.capacity]),
             f"{fmt_level(g['from'])} → {fmt_level(g['to'])}",
             fmt_ci(g.gain, g.ci_low, g.ci_high), f"{int(g.n_from)} / {int(g.n_to)}",
             _gain_noise(g, cell_se, a.capacity)]
            for _, g in a.gains.iterrows()]
    body = markdown_table([a.capacity, "step", "gain [95% Welch CI]", "n (from / to)",
                           "eval noise (95%)"], rows)
    return head + ("Difference of consecutive levels' mean scores at each capacity. The Welch CI "
                   "is over seeds; the evaluation noise is how far another draw of held-out rows "
                   "could move the gain (see the next section).\n\n") + body


def _cell_eval_se(a: Analysis) -> pd.Series:
    """Evaluation SE of each (diversity, capacity) cell's mean score."""
    if a.eval_se.empty or a.trials.empty:
        return pd.Series(dtype=float)
    return noise.cell_eval_se(a.trials, a.eval_se, [a.diversity, a.capacity])


def _gain_noise(g: pd.Series, cell_se: pd.Series, capacity: str) -> str:
    half = noise.difference_noise(cell_se.get((g["from"], g[capacity]), float("nan")),
                                  cell_se.get((g["to"], g[capacity]), float("nan")))
    if math.isnan(half):  # no task SEs
        return DASH
    return f"±{half:.4f}" + (" (gain within it)" if noise.within_noise(g.gain, half) else "")


def _noise_and_budget(a: Analysis) -> str:
    """Which compute budget held, how noisy the evaluation is, whether the test is calibrated."""
    parts = ["## Evaluation noise and compute budget", budget_sentence(a)]
    if not a.task_noise.empty:
        parts += [_eval_noise_sentence(a), _interaction_noise_sentence(a)]
    if a.calibration is not None:
        c = a.calibration
        parts.append(f"Calibration: with this sweep's main effects kept and its residuals "
                     f"permuted {c.n_perm} times (no interaction by construction; "
                     f"{c.distinct} distinct), the interaction test rejected at p < {c.alpha:g} in "
                     f"{100 * c.fpr:.1f}% of them (nominal {100 * c.alpha:g}%).")
    return "\n\n".join(p for p in parts if p)


def budget_sentence(a: Analysis) -> str:
    """`train.steps` (equal compute per cell) or `train.epochs` (steps follow the mixture)."""
    train = a.loaded.spec.get("train") or {}
    steps = _span(a.trials["steps"].dropna().astype(int)) if "steps" in a.trials else DASH
    kind, value = a.budget["kind"], fmt_level(a.budget["value"])
    if kind == "epochs":
        return (f"Compute budget: `train.epochs` = {value}. Steps follow each mixture's size "
                f"({steps} steps here): every training row is seen about {value} times, as the "
                "reference study trained, so a cell with more subtasks also gets more compute and "
                "the diversity effect includes that compute.")
    if kind is None:
        return "Compute budget: the results hold no sweep.yaml saying which budget held."
    return (f"Compute budget: `train.steps` = {value} in every cell (equal compute per cell). A "
            f"cell with more subtasks sees each of them fewer times{_passes(a, train)}, so a "
            "diversity effect here is measured at fixed compute, not at equal passes over each "
            "row (`train.epochs` gives that).")


def _passes(a: Analysis, train: dict) -> str:
    """': 1.6 passes over each row at 6 subtasks, 0.4 at 19' from steps x batch / rows."""
    batch = train.get("batch_size") or (train.get("micro_batch") * (train.get("grad_accum") or 1)
                                        if isinstance(train.get("micro_batch"), int) else None)
    rows = {r.run.trial_id: sum(r.data.examples.values()) for r in a.loaded.successful}
    if not batch or "n_subtasks" not in a.trials or not all(rows.values()):
        return ""
    passes = a.trials["steps"] * batch / a.trials["trial_id"].map(rows)
    by = passes.groupby(a.trials["n_subtasks"]).mean().sort_index()
    if len(by) < 2:
        return ""
    text = ", ".join(f"{p:.2g} at {fmt_level(n)} subtasks" for n, p in by.items())
    return f" (passes over each training row, unpacked: {text})"


def _eval_noise_sentence(a: Analysis) -> str:
    tn = a.task_noise
    sources = tn["se_source"].value_counts()
    half = noise.Z95 * a.eval_se["eval_se"]
    told = ", ".join(f"{int(sources.get(s, 0))} {label}" for s, label in (
        ("record", "from the records"), ("bound", "bounded by sqrt(s(1-s)/n)"),
        ("unknown", "unknown (counted at 0.5/sqrt(n) in the overall)")) if sources.get(s, 0))
    task_half = (tn["ci_high"] - tn["ci_low"]).median() / 2
    return (f"The CIs over seeds treat the held-out rows as fixed. Each task is judged on "
            f"{_span(tn['n'].astype(int))} rows, so one trial's task score moves by about "
            f"±{task_half:.3f} (median 95% half-width; per task in the per-task table) with "
            f"another draw of rows, and its overall score by ±{half.median():.4f}. Task SEs: "
            f"{told}.")


def _interaction_noise_sentence(a: Analysis) -> str:
    """Compare the interaction with the evaluation noise of the coefficient itself."""
    if not a.fit.estimable or a.eval_se.empty:
        return ""
    trials = a.trials.merge(a.eval_se, on="trial_id", how="left")
    cells = list(zip(trials[a.diversity], trials[a.capacity]))
    cell_se = trials.groupby([a.diversity, a.capacity])["eval_se"].transform("mean")
    design = frame_design(trials, a.diversity, a.capacity, a.log2_capacity)
    half = noise.Z95 * noise.coefficient_eval_se(design, cells, cell_se)
    if math.isnan(half):
        return ""
    if noise.within_noise(a.fit.estimate, half):
        verdict = (f"is smaller than the evaluation noise (±{half:.4f}, 95%): another draw of "
                   "held-out rows could move it that far, so read it as a statement about these "
                   "rows")
    else:
        verdict = f"exceeds the evaluation noise (±{half:.4f}, 95%)"
    return (f"The interaction {a.fit.estimate:+.4f} {verdict}. That noise is an upper bound: it "
            "treats each cell's seeds as sharing their rows' luck and different cells as judged on "
            "independent rows, while every cell is judged on the same rows.")


def _ablations(a: Analysis) -> str:
    base = a.baseline_score
    base_tracks = {"overall": base} if base is not None else None
    if base_tracks is not None and not a.baseline_tracks.empty:
        means = a.baseline_tracks.groupby("track")["score"].mean()
        base_tracks.update({f"track {t}": v for t, v in means.items()})
    note = ("Mean overall score [95% t-CI over seeds] per cell; each row pools any other factor "
            "the sweep varied.")
    return "\n\n".join([
        "## Capability ablation (domains added)", note,
        tables.capability_table(a.trials, a.capacity, base),
        "## Task ablation (subtasks)", tables.task_ablation_table(a.trials, a.capacity, base),
        "## LoRA rank" if a.capacity == "lora_rank" else f"## Capacity: `{a.capacity}`",
        tables.rank_table(a.trials, a.tracks, a.capacity, base_tracks),
    ])


def _breakdowns(a: Analysis, figures: dict[str, str]) -> str:
    if a.tracks.empty:
        return "## Per-track breakdown\n\n_No track scores._"
    fits = [[t, fmt_ci(f.estimate, f.ci_low, f.ci_high) if f.estimable else DASH,
             fmt_p(f.p_value) if f.estimable else (f.reason or "")]
            for t, f in a.track_fits.items()]
    return "\n\n".join(p for p in [
        "## Per-track breakdown",
        tables.ablation_table(a.tracks, ["track", a.diversity], a.capacity),
        "Interaction estimate per track:",
        markdown_table(["track", "interaction [95% CI]", "p"], fits),
        _figure(figures, "tracks", "Per-track interaction panels"),
        "## Per-task breakdown",
        "Mean task score per diversity level; ± is one trial's evaluation noise (95% CI "
        "half-width of its task score), and the last column marks changes within it.",
        tables.task_breakdown_table(a.tasks, a.baseline_tasks, a.diversity, a.task_noise, a.format_floor),
    ] if p)


def _curves(figures: dict[str, str]) -> str:
    if "training_curves" not in figures:
        return "## Training curves\n\n_No loss curves in the records._"
    return "## Training curves\n\n" + _figure(figures, "training_curves", "Training loss curves")


def _clip(text: str, limit: int = 240) -> str:
    """Tracebacks belong in the record; the report keeps a readable first part of the reason."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failed(a: Analysis) -> str:
    head = "## Failed trials\n\n"
    if a.failed.empty:
        return head + "None."
    keys = [k for k in ("domains", "n_subtasks", "volume", "capacity", "lora_rank", "seed")
            if k in a.failed.columns]
    rows = [[f"`{r.trial_id}`", r.status, ", ".join(f"{k}={r[k]}" for k in keys),
             _clip(r.reason)]
            for _, r in a.failed.iterrows()]
    return head + markdown_table(["trial", "status", "factors", "reason"], rows)
