"""Shared fixtures for the evaluation tests: the MiniLM model, loaded once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 through the same cached loader the sent-transformer metric uses."""
    from harness.data.embeddings import load_sentence_model, minilm_location
    from harness.errors import MissingDependencyError

    try:
        location = minilm_location()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    return load_sentence_model(*location)
