"""Checks before launch: what would otherwise fail only after trials trained and evaluated.

    eval_sets = check_evaluation(spec)     # harness plan and harness sweep call it first

Every evaluation file is read and validated (bad rows named `FILE:row N`, as the data readers do),
the sources' held-out split is built, and every metric the evaluation rows name is checked to run
on this machine (the ja-mecab tokenizer of jp-bleu, the sentence-transformer models, the
multilingual one's HARNESS_MULTILINGUAL_ST_MODEL). With --address the driver's pre-launch probe
repeats the metric check on a worker (harness.sweep.cluster).
"""

from __future__ import annotations

from typing import Any

from harness.errors import InputError
from harness.spec.schema import SweepSpec

EvalRows = dict[str, list[dict[str, Any]]]


def check_evaluation(spec: SweepSpec) -> EvalRows:
    """The sweep's evaluation sets, read and validated; InputError naming every metric that cannot run."""
    from harness.data.mixture import build_eval_sets
    from harness.evaluate.metrics import metric_problems

    eval_sets = build_eval_sets(spec.eval, spec.data)
    problems = metric_problems(evaluation_metrics(eval_sets))
    if problems:
        raise InputError("the evaluation cannot be scored on this machine; nothing was launched:\n  "
                         + "\n  ".join(problems))
    return eval_sets


def evaluation_metrics(eval_sets: EvalRows) -> list[str]:
    """Every metric the evaluation rows name, once each, in order of appearance."""
    return list(dict.fromkeys(row["metric"] for rows in eval_sets.values() for row in rows))
