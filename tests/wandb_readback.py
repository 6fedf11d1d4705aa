"""Read an offline W&B run back with wandb's own reader, `wandb leet inspect` (DESIGN.md section 7):
`--summary --json` gives state, config and summary; `--json` gives every record of the run's
.wandb log (the run record holds group, job type and tags). A logged table's rows are in the JSON
file its summary entry points to (files/<path>); an image's bytes in files/<path>.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def leet(run_dir: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *args, str(run_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_summary(run_dir: Path) -> dict[str, Any]:
    """{"state", "run_id", "project", "tags", "config", "summary", ...} of the run."""
    return json.loads(leet(run_dir, "--summary", "--json"))


def run_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in leet(run_dir, "--json").splitlines() if line.strip()]


def run_header(run_dir: Path) -> dict[str, Any]:
    """The run record: run_id, run_group, job_type, tags, display_name, config."""
    return next(r["run"] for r in run_records(run_dir) if r["type"] == "run")


def history(run_dir: Path) -> list[dict[str, Any]]:
    return [r["history"]["item"] for r in run_records(run_dir) if r["type"] == "history"]


def table_rows(run_dir: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a table whose summary entry (a "table-file") is given."""
    assert entry["_type"] == "table-file", entry
    doc = json.loads((Path(run_dir) / "files" / entry["path"]).read_text())
    return [dict(zip(doc["columns"], row)) for row in doc["data"]]


def offline_runs(wandb_dir: Path, run_id: str) -> list[Path]:
    """The offline folders of one run, oldest first: offline-run-<date>_<time>-<run id>, with "-1"
    added when two start in the same second; each holds run-<run id>.wandb."""
    return sorted(p for p in Path(wandb_dir).glob("offline-run-*")
                  if (p / f"run-{run_id}.wandb").exists())
