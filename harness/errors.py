"""Error types shared across the harness.

An `InputError` is the user's to fix (a typo in a sweep YAML, a malformed benchmark row): its message
names the file, field or row and says how to fix it, and the CLI turns it into exit code 2 with no
traceback. Anything else is a bug or an environment problem and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class for errors the harness raises on purpose."""

    exit_code = 1


class InputError(HarnessError):
    """Bad user input. The message names where the problem is and how to fix it."""

    exit_code = 2


class MissingDependencyError(HarnessError):
    """An optional integration is not installed; the message carries the pip command."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """A one-line message for an unknown registry name, with a suggestion and the valid names."""
    choices = sorted(choices)
    return f"unknown {kind} {name!r}{did_you_mean(name, choices)}; known: {', '.join(choices)}"
