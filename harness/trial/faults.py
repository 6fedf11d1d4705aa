"""Deliberate faults, from HARNESS_FAULTS, for testing how the driver and a trial handle failures.

    HARNESS_FAULTS="kill:<trial-id prefix>,raise:<prefix>,oom:<prefix>,nan:<prefix>,diverge:<prefix>"

`inject_fault` acts at the start of a training attempt (kill, raise, oom); `_inject_model_faults`
acts on the model (NaN logits, diverging gradients). Without the variable nothing happens.
"""

from __future__ import annotations

import os
from typing import Any

from harness.spec.schema import TrialSpec


def inject_fault(spec: TrialSpec, stage: str) -> None:
    """Deliberate faults for testing the driver's fault handling, from HARNESS_FAULTS.

    HARNESS_FAULTS="kill:<trial-id prefix>,raise:<prefix>,oom:<prefix>,nan:<prefix>,diverge:<prefix>":
    kill SIGKILLs the worker process at the start of training; raise raises; oom raises
    torch.OutOfMemoryError on the first training attempt only (the retry then succeeds); nan makes the
    model's logits NaN, so the training loss really becomes NaN; diverge flips the gradients' sign, so
    the loss climbs without a NaN (a run going wrong that early stopping should catch). The last two
    act on the model: see `_inject_model_faults`.
    """
    if not _fault_matches(spec, stage):
        return
    if stage == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if stage == "raise":
        raise RuntimeError(f"injected fault (HARNESS_FAULTS={os.environ['HARNESS_FAULTS']})")
    if stage == "oom":
        import torch

        raise torch.OutOfMemoryError("injected out-of-memory (HARNESS_FAULTS)")


def _fault_matches(spec: TrialSpec, kind: str) -> bool:
    for item in filter(None, (f.strip() for f in os.environ.get("HARNESS_FAULTS", "").split(","))):
        name, _, prefix = item.partition(":")
        if name == kind and prefix and spec.trial_id.startswith(prefix):
            return True
    return False


def _inject_model_faults(adapted: Any, spec: TrialSpec) -> None:
    """nan: NaN logits, so the real loss check sees a real NaN; diverge: gradient ascent."""
    if _fault_matches(spec, "nan"):
        head = adapted.base_model().get_output_embeddings()
        head.register_forward_hook(lambda _module, _inputs, out: out * float("nan"))
    if _fault_matches(spec, "diverge"):
        for param in adapted.trainable_parameters():
            param.register_hook(lambda grad: -grad)
