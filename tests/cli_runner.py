"""Run the `harness` command line in this process (fast, and capsys sees its output)."""

from __future__ import annotations

import sys

from harness import cli


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """(exit code, stderr + stdout) of `harness ARGS` run in this process."""
    argv = sys.argv
    sys.argv = ["harness", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.err + captured.out
