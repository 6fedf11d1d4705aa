"""What a training run does at each loss report, and with its adapters (`TrainingMonitor`).

At every train.log_every steps: the loss to W&B, the held-out loss (train.eval_every, on
`validation_rows`), the reporter (Ray Tune, whose ASHA scheduler stops trials on that loss) and an
intermediate adapter (train.checkpoint_every, train.keep_checkpoints). At the end the final
adapter is saved, before evaluation, replacing the trial's adapter directory only then.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spec.schema import TrialSpec

Reporter = Callable[[dict[str, Any]], None]


def validation_rows(spec: TrialSpec) -> list[dict[str, Any]]:
    """Rows for the training-time held-out loss (only with train.eval_every): the synthetic held-out
    rows just past the ones evaluated, train.eval_rows per subtask of every domain. Never trained on
    (another split), never scored (past eval.per_subtask), and one yardstick for every cell."""
    if spec.kind != "trial" or spec.train.eval_every is None:
        return []
    from harness.tasks import registry, synthetic

    start = spec.eval.per_subtask
    return [row for sub in registry.all_subtasks()
            for row in synthetic.generate_rows(sub.id, "heldout", start + spec.train.eval_rows,
                                               seed=spec.data.world_seed)[start:]]


@dataclass
class TrainingMonitor:
    """What happens at each loss report: W&B, the held-out loss, the reporter (Ray Tune), and
    intermediate adapters. Called by train_adapter as on_log(step, loss)."""

    spec: TrialSpec
    tokenizer: Any
    fmt: str
    device: str
    logger: Any
    reporter: Reporter | None
    rows: list[dict[str, Any]]
    adapters: Path
    model: Any = None
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    saved: list[Path] = field(default_factory=list)

    def start(self, model: Any) -> None:
        self.model = model
        self.restart()

    @property
    def staging(self) -> Path:
        """Where an attempt keeps its intermediate adapters. The adapter directory itself is replaced
        only when the final adapter is saved, so a re-run that fails never deletes the adapter that
        the kept (successful) record points at."""
        return self.adapters.with_name(self.adapters.name + ".partial")

    def restart(self) -> None:
        """A fresh attempt (also after an OOM retry): no stale adapters or losses from before."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.eval_curve, self.saved = [], []

    def __call__(self, step: int, loss: float) -> None:
        metrics: dict[str, Any] = {"step": step, "train_loss": loss}
        every = self.spec.train.eval_every
        if self.rows and every and step % every == 0:
            metrics["eval_loss"] = self.held_out_loss(self.model, step)
        self.logger.log({"train/loss": loss, **({"eval/loss": metrics["eval_loss"]}
                                                if "eval_loss" in metrics else {})}, step=step)
        self._maybe_checkpoint(step)
        if self.reporter:
            self.reporter(metrics)

    def held_out_loss(self, model: Any, step: int) -> float:
        from harness.training.loop import eval_loss

        was_training = model.model.training
        model.model.eval()  # no dropout: the loss is comparable across steps and consumes no random numbers
        micro = self.spec.train.micro_batch  # what fits for training fits without gradients
        value = eval_loss(model, self.tokenizer, self.rows, self.spec.train, fmt=self.fmt,
                          device=self.device, batch_size=micro if isinstance(micro, int) else 8)
        model.model.train(was_training)
        self.eval_curve.append((step, value))
        return value

    def final_eval_loss(self, model: Any) -> float | None:
        if not self.rows:
            return None
        if self.eval_curve and self.eval_curve[-1][0] == self.spec.train.steps:
            return self.eval_curve[-1][1]
        value = self.held_out_loss(model, self.spec.train.steps)
        self.logger.log({"eval/loss": value}, step=self.spec.train.steps)
        return value

    def curve_info(self) -> dict[str, Any]:
        return {"eval_loss_curve": self.eval_curve} if self.eval_curve else {}

    def _maybe_checkpoint(self, step: int) -> None:
        train = self.spec.train
        if (train.checkpoint_every is None or train.keep_checkpoints < 2 or step % train.checkpoint_every
                or step >= train.steps):
            return
        path = self.staging / f"step-{step:06d}"
        self.model.save(path)
        self.saved.append(path)
        for old in self.saved[: -(train.keep_checkpoints - 1)]:  # the final adapter is the last kept
            shutil.rmtree(old, ignore_errors=True)
        self.saved = self.saved[-(train.keep_checkpoints - 1):]

    def save_final(self, model: Any) -> tuple[dict[str, Any], int]:
        """Save the final adapter (before evaluation: a crash there keeps the weights); returns the
        record's artifact entries, as paths relative to the results directory, and its bytes on
        disk (the final adapter alone, not the intermediate ones kept beside it). With
        keep_checkpoints 0 the adapter is measured in a scratch directory, then dropped."""
        if self.spec.train.keep_checkpoints < 1:
            import tempfile

            with tempfile.TemporaryDirectory() as scratch:
                return {}, model.save(Path(scratch))
        final = self.adapters.with_name(self.adapters.name + ".final")
        shutil.rmtree(final, ignore_errors=True)
        size = model.save(final)
        for checkpoint in self.saved:
            checkpoint.rename(final / checkpoint.name)
        shutil.rmtree(self.adapters, ignore_errors=True)
        final.rename(self.adapters)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.saved = [self.adapters / p.name for p in self.saved]
        root = self.adapters.parent.parent
        return {"adapter": str(self.adapters.relative_to(root)),
                "adapter_checkpoints": [str(p.relative_to(root)) for p in self.saved]}, size
