"""Parameter counts per capacity family: by hand, against what peft and MoLE really create."""

from __future__ import annotations

import pytest

from harness.capacity.adapters import attach
from harness.capacity.params import adapter_params, match_rank
from harness.model import load_base_model
from harness.shapes import model_shape
from harness.spec.schema import AdapterSpec

TINY = model_shape("builtin:tiny")  # hidden 128, kv 64 (4 heads, 2 kv heads), mlp 352, 4 layers
# (in + out) summed over one layer's projections: q 128+128, k 128+64, v 128+64, o 128+128,
# gate 128+352, up 128+352, down 352+128
ATTN_IO, MLP_IO = 256 + 192 + 192 + 256, 480 + 480 + 480
ATTN_OUT, MLP_OUT = 128 + 64 + 64 + 128, 352 + 352 + 128
ATTN_IN, MLP_IN = 4 * 128, 128 + 128 + 352


@pytest.mark.parametrize("family, targets, expected", [
    ("lora", "all-linear", 4 * 4 * (ATTN_IO + MLP_IO)),
    ("lora", "attention", 4 * 4 * ATTN_IO),
    ("dora", "mlp", 4 * (4 * MLP_IO + MLP_OUT)),
    ("dora", "all-linear", 4 * (4 * (ATTN_IO + MLP_IO) + ATTN_OUT + MLP_OUT)),
    ("multi_lora", "all-linear", 4 * 3 * 4 * (ATTN_IO + MLP_IO)),  # 2 groups + shared
    ("mole", "attention", 4 * 4 * (4 * ATTN_IO + ATTN_IN)),  # 4 experts + the router
    ("mole", "all-linear", 4 * 4 * (4 * (ATTN_IO + MLP_IO) + ATTN_IN + MLP_IN)),
])
def test_hand_counts(family, targets, expected):
    assert adapter_params(TINY, family, 4, targets, experts=4, n_groups=2) == expected


@pytest.mark.parametrize("family", ["lora", "dora", "multi_lora", "mole"])
@pytest.mark.parametrize("targets", ["all-linear", "attention", "mlp", ["q_proj", "v_proj"]])
def test_counts_match_the_built_adapters(family, targets):
    _, model, _ = load_base_model("builtin:tiny")
    extra = {"multi_lora": dict(groups={"concept": ["concept"], "reasoning": ["reasoning"]}, group_by="domain"),
             "mole": dict(experts=3, top_k=2, router_aux_weight=0.01)}.get(family, {})
    adapted = attach(model, AdapterSpec(family=family, rank=3, alpha=6, target_modules=targets, **extra))
    built = sum(p.numel() for p in adapted.trainable_parameters())
    assert built == adapter_params(TINY, family, 3, targets, experts=3, n_groups=2)
    assert built == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_unknown_module_names_have_no_count():
    assert adapter_params(TINY, "lora", 4, ["c_attn"]) is None
    assert match_rank(1000, TINY, "lora", ["c_attn"]) is None


def test_match_rank_picks_the_nearest_rank():
    lora_r16 = adapter_params(TINY, "lora", 16, "all-linear")
    assert match_rank(lora_r16, TINY, "lora", "all-linear") == (16, lora_r16)
    rank, params = match_rank(lora_r16, TINY, "mole", "all-linear", experts=4)
    # 4 experts of rank r plus the router: 37376 r + 17920; the nearest to 149504 is r = 4 (3.52 rounds up)
    assert (rank, params) == (4, 4 * 37376 + 17920)
    for other in (rank - 1, rank + 1):
        assert abs(adapter_params(TINY, "mole", other, "all-linear", experts=4) - lora_r16) >= abs(params - lora_r16)


def test_a_budget_too_small_for_the_setting_is_refused():
    lora_r1 = adapter_params(TINY, "lora", 1, "all-linear")
    assert match_rank(lora_r1, TINY, "mole", "all-linear", experts=8) is None
