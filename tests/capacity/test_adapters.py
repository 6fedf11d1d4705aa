"""Each family trains, saves, reloads to the same outputs, and merges where the family allows it;
multi_lora routes rows to their group's adapter and unknown rows to the shared one."""

from __future__ import annotations

import pytest
import torch

from harness.capacity.adapters import attach, load_adapted, read_spec
from harness.model import load_base_model
from harness.spec.schema import AdapterSpec, TrainSpec
from harness.tasks import synthetic
from harness.training.loop import train_adapter

GROUPS = dict(groups={"concept": ["concept"], "reasoning": ["reasoning"]}, group_by="domain")
SPECS = {
    "lora": AdapterSpec(rank=4, alpha=8),
    "dora": AdapterSpec(family="dora", rank=4, alpha=8),
    "multi_lora": AdapterSpec(family="multi_lora", rank=4, alpha=8, **GROUPS),
    "mole": AdapterSpec(family="mole", rank=4, alpha=8, experts=3, top_k=2, router_aux_weight=0.01),
}


@pytest.fixture(scope="module")
def rows():
    return synthetic.generate_rows("attribute_infer", "train", 24) + synthetic.generate_rows("unit_price", "train", 24)


@pytest.fixture(scope="module")
def trained(rows, tmp_path_factory):
    """family -> (tokenizer, adapted model, save dir, bytes on disk), each trained a few steps."""
    out = {}
    for family, spec in SPECS.items():
        tokenizer, base, _ = load_base_model("builtin:tiny")
        adapted = attach(base, spec)
        train_adapter(adapted, tokenizer, rows, TrainSpec(steps=6, lr=1e-2, micro_batch=8, warmup_steps=1,
                                                       log_every=3), seed=0, fmt="raw", device="cpu")
        path = tmp_path_factory.mktemp(family)
        out[family] = (tokenizer, adapted, path, adapted.save(path))
    return out


def _logits(adapted, tokenizer, group=""):
    adapted.route(group)
    adapted.model.eval()
    ids = tokenizer(["Which category fits a steel water bottle?", "2 packs of 6 cost 12. Unit price?"],
                    return_tensors="pt", padding=True)
    with torch.no_grad():
        return adapted.model(**ids).logits


@pytest.mark.parametrize("family", list(SPECS))
def test_reloaded_adapter_gives_the_same_outputs(trained, family):
    tokenizer, adapted, path, size = trained[family]
    assert size > 0 and size == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert read_spec(path) == SPECS[family]
    _, fresh, _ = load_base_model("builtin:tiny")
    again = load_adapted(fresh, path)
    for group in ([""] if family != "multi_lora" else ["", "concept", "reasoning"]):
        torch.testing.assert_close(_logits(again, tokenizer, group), _logits(adapted, tokenizer, group))


@pytest.mark.parametrize("family, group", [("lora", None), ("dora", None), ("multi_lora", "concept"),
                                           ("multi_lora", None)])
def test_merged_model_matches_the_adapter(trained, family, group):
    tokenizer, _, path, _ = trained[family]
    _, fresh, _ = load_base_model("builtin:tiny")
    adapted = load_adapted(fresh, path)
    expected = _logits(adapted, tokenizer, group or "")
    merged = adapted.merged(group)
    ids = tokenizer(["Which category fits a steel water bottle?", "2 packs of 6 cost 12. Unit price?"],
                    return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, expected, rtol=1e-4, atol=1e-4)
    assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_mole_refuses_to_merge(trained):
    with pytest.raises(ValueError, match="cannot be merged"):
        trained["mole"][1].merged()


def test_multi_lora_trains_each_group_and_the_shared_adapter(trained, rows):
    _, adapted, _, _ = trained["multi_lora"]
    for name in ("shared", "concept", "reasoning"):
        b = [p for n, p in adapted.model.named_parameters() if f"lora_B.{name}." in n]
        assert b and all(p.abs().sum() > 0 for p in b), f"adapter {name} never trained"
    # Routing changes the output: each group's adapter differs from the shared one alone
    tokenizer = trained["multi_lora"][0]
    assert not torch.allclose(_logits(adapted, tokenizer, "concept"), _logits(adapted, tokenizer, ""))


def test_multi_lora_routes_evaluation_rows():
    _, base, _ = load_base_model("builtin:tiny")
    spec = SPECS["multi_lora"].model_copy(update={"eval_map": {"special_task": "reasoning"}})
    adapted = attach(base, spec)
    assert adapted.group_of({"domain": "concept"}) == "concept"
    assert adapted.eval_group_of({"domain": "reasoning"}) == "reasoning"
    assert adapted.eval_group_of({"domain": "multilingual"}) == ""  # no adapter: the shared one alone
    assert adapted.eval_group_of({"task_name": "special_task", "domain": "concept"}) == "reasoning"
    from harness.tasks import registry

    track = registry.get_domain("concept").track
    assert adapted.eval_group_of({"track": track}) == "concept"  # real ShopBench rows carry a track
    with pytest.raises(ValueError, match="belongs to no adapter group"):
        adapted.group_of({"domain": "behavior"})


def test_batches_never_mix_groups(rows):
    from harness.training.batching import encode_example, make_batches

    tokenizer, _, _ = load_base_model("builtin:tiny")
    examples = [encode_example(r, tokenizer, "raw", 128, group=r["domain"]) for r in rows]
    batches = make_batches(examples, 5, seed=0, pad_id=tokenizer.pad_token_id, packing=False)
    by_group = {}
    for _ in range(12):
        (micro,) = next(batches)  # grad_accum 1: one micro-batch per step
        group, batch = micro.group, micro.batch
        assert micro.share == 1.0
        by_group[group] = by_group.get(group, 0) + len(batch["input_ids"])
        labels = {tuple(e.input_ids) for e in examples if e.group == group}
        for row in batch["input_ids"]:
            ids = tuple(t for t in row.tolist() if t != tokenizer.pad_token_id)
            assert ids in labels
    assert set(by_group) == {"concept", "reasoning"}
