"""builtin:tiny: the pretrained copy that ships in the package matches the recipe and world, and a cold
cache is filled from it (a changed recipe pretrains instead)."""

from __future__ import annotations

import json

from harness import model


def test_the_shipped_tiny_matches_this_recipe_and_world():
    # Fails when the world, the corpus or the pretraining recipe changed without re-shipping the model:
    # run `python -m harness.model --ship-tiny` and commit harness/builtin_models/tiny/.
    done = json.loads((model.SHIPPED_TINY / "done.json").read_text())
    assert done["fingerprint"] == model.tiny_fingerprint()
    assert model.shipped_tiny_matches()


def test_a_cold_cache_copies_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    path = model.ensure_tiny()
    assert path.parent == tmp_path / "models"
    assert (path / "model.safetensors").read_bytes() == (model.SHIPPED_TINY / "model.safetensors").read_bytes()
    tokenizer, lm, info = model.load_base_model(model.TINY_ID)
    assert info.revision == model.tiny_fingerprint() and 0.8e6 < info.n_params < 1e6
