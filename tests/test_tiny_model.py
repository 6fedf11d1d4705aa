"""builtin:tiny's tokenizer: shipped with the package, and read back exactly as pretraining used it."""

from __future__ import annotations

import shutil

import pytest

from harness import model as model_mod
from harness.model import build_tiny_tokenizer, load_base_model, tiny_fingerprint
from harness.tasks import registry, synthetic

TEXTS = [
    "Which offer of 'Daxa black canvas backpack' has the lowest price per item?\n0. pack of 12 for $34.99",
    "Product type: kettle\nReview: Somewhat disappointed. cracked fast.\nAnswer: 2 stars",
    "The Spanish title Vasta camisa rojo de algodón para mujer names Vasta red cotton shirt for women.",
    "A shopper buys 4 packs of 'Brio green ceramic bowl, large, pack of 2'. Answer: 8",
]


def test_builtin_tiny_reads_text_as_its_pretraining_did():
    """The loaded tokenizer is the one pretraining used. transformers 5's AutoTokenizer builds
    Qwen2Tokenizer for a Qwen2-shaped checkpoint, whose pre-tokenizer split every number into digits
    (" 12" as " ", "1", "2"), so fine-tuning and evaluation read numbers pretraining never wrote."""
    loaded, _, _ = load_base_model("builtin:tiny")
    shipped = build_tiny_tokenizer()
    prompts = [r["input_field"] for s in registry.all_subtasks() for r in synthetic.generate_rows(s.id, "heldout", 3)]
    for text in TEXTS + prompts:
        assert loaded(text)["input_ids"] == shipped(text)["input_ids"], text
    assert len(loaded(" 12")["input_ids"]) == 1


def test_fingerprint_follows_the_shipped_tokenizer_and_not_the_task_prompts(tmp_path, monkeypatch):
    before = tiny_fingerprint()
    monkeypatch.setattr(synthetic, "generate_rows", lambda *a, **k: pytest.fail("task rows read"))
    assert tiny_fingerprint() == before  # a reworded task leaves the pretrained model as it is
    edited = tmp_path / "tiny_tokenizer.json"
    shutil.copy(model_mod.TINY_TOKENIZER, edited)
    edited.write_text(edited.read_text().replace('"<unk>"', '"<unknown>"'))
    monkeypatch.setattr(model_mod, "TINY_TOKENIZER", edited)
    assert tiny_fingerprint() != before
