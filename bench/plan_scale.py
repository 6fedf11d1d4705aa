"""How long `harness plan` takes on a big grid (issue 16: 10^5 trials must plan in under 5 s).

    python bench/plan_scale.py [--trials 100000] [--repeat 1]

Builds a smoke-sized sweep whose grid expands to about --trials trials (4 data sets x 2 volumes x
2 ranks x seeds), runs the `plan` command in this process with its output sent to a throwaway
buffer, and prints the wall and CPU time of each run and the lines printed (the first run includes
the imports a `harness plan` pays too). Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def big_sweep(trials: int) -> dict:
    seeds = max(trials // 16, 1)  # 4 data sets x 2 volumes x 2 ranks x seeds
    return {"name": "plan_scale", "base_model": "builtin:tiny",
            "grid": {"domains": {"incremental": ["concept", "reasoning", "behavior", "multilingual"]},
                     "volume": [100, 200], "lora_rank": [4, 8], "seed": list(range(seeds))},
            "train": {"steps": 10}, "limits": {"max_trials": max(trials, 100_000)}}


def time_plan(path: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, lines printed); on a shared machine the CPU time
    is what an idle machine's wall time would be."""
    from harness.cli import app

    out = io.StringIO()
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out):
        try:
            app(["plan", str(path)], standalone_mode=False)
        except SystemExit:
            pass
    return time.perf_counter() - start, time.process_time() - cpu, out.getvalue().count("\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(yaml.safe_dump(big_sweep(args.trials)))
        for _ in range(args.repeat):
            wall, cpu, lines = time_plan(path)
            print(f"plan of ~{args.trials} trials: {wall:.2f} s wall, {cpu:.2f} s CPU, {lines} lines printed")


if __name__ == "__main__":
    main()
