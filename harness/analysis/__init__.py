"""The interaction analysis: does the gain from training-data diversity grow with LoRA capacity?

Reads a sweep's records (never runs anything), so it imports without torch or ray:

    harness analyze results/smoke [--compare results/other] [--diversity n_subtasks]
    harness analyze results/caps [--capacity adapter_params] [--by-family] [--family-size ...]

    from harness.analysis import analyze, compute_analysis
    summary = analyze(Path("results/smoke"))        # writes report.md, summary.json, figures/
    a = compute_analysis(Path("results/smoke"))     # the same numbers, nothing written

Modules: load (records -> tables), stats (cell CIs, the OLS interaction, ANOVA, marginal gains),
family (capacity as family x size: the interaction per adapter family, and whether it differs),
noise (per-task evaluation SEs and CIs), calibration (the interaction test under permutations),
power (what a planned design can detect, from a pilot: `harness plan SWEEP --pilot DIR`),
tables (markdown), plots (Agg figures), pipeline (compute_analysis), compare (two sweeps),
report (report.md), outputs (analyze: writes everything).
"""

from harness.analysis.family import FamilyComparison, compare_families
from harness.analysis.load import LoadedSweep, load_results, trial_table
from harness.analysis.outputs import AnalysisSummary, analyze, summary_dict, write_figures
from harness.analysis.pipeline import DIVERSITY_CHOICES, Analysis, compute_analysis
from harness.analysis.report import interaction_sentence, render_report

__all__ = [
    "DIVERSITY_CHOICES",
    "Analysis",
    "AnalysisSummary",
    "FamilyComparison",
    "LoadedSweep",
    "analyze",
    "compare_families",
    "compute_analysis",
    "interaction_sentence",
    "load_results",
    "render_report",
    "summary_dict",
    "trial_table",
    "write_figures",
]
