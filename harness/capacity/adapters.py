"""Attach, route, save, load and merge a trial's adapters, whatever the capacity family.

    adapted = attach(base_model, trial.capacity)     # AdaptedModel: .model runs forward
    adapted.route(adapted.group_of(row))            # multi_lora: pick the row's adapter
    adapted.save(path); again = load_adapted(fresh_base, path)
    merged = adapted.merged()                       # plain model with the adapter folded in

The trainer and the evaluator only talk to AdaptedModel. Each family's class here is named by its
definition in harness.capacity.families (`Family.adapted`), which is how `attach` and `load_adapted`
find it: nothing here compares family names.
- lora / dora: one peft LoRA adapter (DoRA adds the magnitude vector; rsLoRA scaling on demand).
- multi_lora: peft adapters named after the groups (a domain, a subtask, or a declared set of them)
  plus `shared`. A training batch holds one group's rows and runs that group's adapter together with
  the shared one (their updates add up), so the shared adapter learns from every example and the
  group adapters learn what is specific. At evaluation a row goes to its group's adapter (by the
  declared capacity.eval_map on task name / track / task type, else by the row's domain or subtask,
  else by its ShopBench track's domain); a row no group claims runs the shared adapter alone.
- mole: harness.capacity.mole (token-level router over LoRA experts, its own module docstring).
Saved adapters carry `capacity.json` (the AdapterSpec), so a directory reloads without the sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.capacity.registry import get_family
from harness.capacity.schema import SHARED, AdapterSpec
from harness.shapes import TARGET_SETS

if TYPE_CHECKING:  # torch loads when a model does: plan and validation import this module without it
    import torch
    from torch import nn

SPEC_FILE = "capacity.json"


class AdaptedModel:
    """A model with no adapter (the baseline); the families below override what they add."""

    def __init__(self, model: nn.Module, spec: AdapterSpec | None = None):
        self.model, self.spec = model, spec

    def base_model(self) -> nn.Module:
        return self.model

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def group_of(self, row: dict[str, Any]) -> str:
        """Training batches never mix groups; one group unless the family routes by example."""
        return ""

    def eval_group_of(self, row: dict[str, Any]) -> str:
        return ""

    def route(self, group: str) -> None:
        """Make `group`'s adapters the active ones (no-op for families without routing)."""

    def aux_loss(self) -> torch.Tensor | None:
        """An auxiliary training loss of the last forward pass, already weighted (MoLE balancing)."""
        return None

    def save(self, path: Path) -> int:
        """Save the adapter only (no base weights); returns its size on disk in bytes."""
        raise NotImplementedError("the baseline has no adapter to save")

    def merged(self, group: str | None = None) -> nn.Module:
        """The base model with the adapter folded into its weights (consumes this adapter)."""
        raise NotImplementedError("the baseline has no adapter to merge")

    def _write_spec(self, path: Path) -> int:
        (path / SPEC_FILE).write_text(self.spec.model_dump_json(indent=2))
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class PeftAdapted(AdaptedModel):
    """Plain LoRA: one peft adapter named `default`."""

    use_dora = False

    @classmethod
    def attach(cls, model: nn.Module, spec: AdapterSpec) -> AdaptedModel:
        from peft import get_peft_model

        return cls(get_peft_model(model, _lora_config(spec, cls.use_dora)), spec)

    @classmethod
    def load(cls, model: nn.Module, path: Path, spec: AdapterSpec, trainable: bool) -> AdaptedModel:
        from peft import PeftModel

        return cls(PeftModel.from_pretrained(model, str(path), is_trainable=trainable), spec)

    def base_model(self) -> nn.Module:
        return self.model.get_base_model()

    def save(self, path: Path) -> int:
        path = Path(path)
        self.model.save_pretrained(str(path))  # multi_lora: one subfolder per adapter name
        return self._write_spec(path)

    def merged(self, group: str | None = None) -> nn.Module:
        return self.model.merge_and_unload()


class DoraAdapted(PeftAdapted):
    """DoRA: peft's LoRA with the weight decomposed into magnitude and direction."""

    use_dora = True


class MultiLoraAdapted(PeftAdapted):
    @classmethod
    def attach(cls, model: nn.Module, spec: AdapterSpec) -> AdaptedModel:
        from peft import get_peft_model

        peft_model = get_peft_model(model, _lora_config(spec), adapter_name=SHARED)
        for group in spec.groups:
            peft_model.add_adapter(group, _lora_config(spec))
        for name, param in peft_model.named_parameters():
            param.requires_grad_("lora_" in name)  # every group's adapter trains, not only the active one
        return cls(peft_model, spec)

    @classmethod
    def load(cls, model: nn.Module, path: Path, spec: AdapterSpec, trainable: bool) -> AdaptedModel:
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, str(path / SHARED), adapter_name=SHARED,
                                               is_trainable=trainable)
        for group in spec.groups:
            peft_model.load_adapter(str(path / group), adapter_name=group, is_trainable=trainable)
        return cls(peft_model, spec)

    def __init__(self, model: nn.Module, spec: AdapterSpec):
        super().__init__(model, spec)
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self._member_group = {m: g for g, members in (spec.groups or {}).items() for m in members}
        self.route("")

    def group_of(self, row: dict[str, Any]) -> str:
        member = row.get(self.spec.group_by)
        if member not in self._member_group:
            raise ValueError(f"multi_lora: training row of {self.spec.group_by} {member!r} belongs to no "
                             f"adapter group ({sorted(self.spec.groups)}); check capacity.groups")
        return self._member_group[member]

    def eval_group_of(self, row: dict[str, Any]) -> str:
        declared = self.spec.eval_map or {}
        for key in (row.get("task_name"), row.get("track"), row.get("task_type")):
            if key in declared:
                return "" if declared[key] == SHARED else declared[key]
        member = row.get(self.spec.group_by)
        if member is None and self.spec.group_by == "domain":
            member = _domain_of_track(row.get("track"))
        return self._member_group.get(member, "")

    def route(self, group: str) -> None:
        """Set the active adapters directly on the LoRA layers: peft's set_adapter would also flip
        requires_grad on every switch, and the optimiser holds all adapters' parameters anyway."""
        active = [group, SHARED] if group else [SHARED]
        for layer in self._layers:
            layer._active_adapter = active

    def merged(self, group: str | None = None) -> nn.Module:
        names = [group, SHARED] if group else [SHARED]
        return self.model.merge_and_unload(adapter_names=names)


class MoleAdapted(AdaptedModel):
    @classmethod
    def attach(cls, model: nn.Module, spec: AdapterSpec) -> AdaptedModel:
        from harness.capacity.mole import attach_mole

        attach_mole(model, rank=spec.rank, scaling=spec.scaling, experts=spec.experts, top_k=spec.top_k,
                    targets=spec.target_modules, dropout=spec.dropout)
        return cls(model, spec)

    @classmethod
    def load(cls, model: nn.Module, path: Path, spec: AdapterSpec, trainable: bool) -> AdaptedModel:
        from safetensors.torch import load_file

        adapted = cls.attach(model, spec)
        state = load_file(str(path / "adapter_model.safetensors"))
        missing = [k for k in adapted.model.state_dict() if ".mole_" in k and k not in state]
        if missing:
            raise ValueError(f"{path}: adapter file lacks {len(missing)} MoLE tensors (e.g. {missing[0]}); "
                             "it was saved from a different model or setting")
        adapted.model.load_state_dict(state, strict=False)
        return adapted

    def __init__(self, model: nn.Module, spec: AdapterSpec):
        super().__init__(model, spec)
        from harness.capacity.mole import mole_layers

        self._layers = mole_layers(model)

    def aux_loss(self) -> torch.Tensor | None:
        from harness.capacity.mole import balance_loss

        loss = balance_loss(self._layers)
        return None if loss is None or not self.spec.router_aux_weight else loss * self.spec.router_aux_weight

    def save(self, path: Path) -> int:
        from safetensors.torch import save_file

        from harness.capacity.mole import mole_state_dict

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(mole_state_dict(self.model), str(path / "adapter_model.safetensors"))
        return self._write_spec(path)

    def merged(self, group: str | None = None) -> nn.Module:
        raise ValueError("mole adapters cannot be merged into the base weights: the mixture of experts "
                         "depends on each token's routing; evaluate with the adapter attached")


# ---------------------------------------------------------------------------------------------
# Building and loading


def attach(model: nn.Module, spec: AdapterSpec | None) -> AdaptedModel:
    """Wrap a freshly loaded base model with the trial's adapters (trainable, the base frozen)."""
    if spec is None:
        return AdaptedModel(model)
    return get_family(spec.family).adapted.attach(model, spec)


def _lora_config(spec: AdapterSpec, use_dora: bool = False):
    from peft import LoraConfig

    targets = spec.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = list(TARGET_SETS[targets])
    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                      use_rslora=spec.rslora, use_dora=use_dora, task_type="CAUSAL_LM",
                      bias="none")


def read_spec(path: Path) -> AdapterSpec:
    spec_path = Path(path) / SPEC_FILE
    if not spec_path.exists():
        raise FileNotFoundError(f"{spec_path}: not found; is {path} an adapter saved by the harness?")
    return AdapterSpec.model_validate_json(spec_path.read_text())


def load_adapted(model: nn.Module, path: Path, *, trainable: bool = False) -> AdaptedModel:
    """Load a saved adapter onto a fresh base model of the same kind (for evaluation by default)."""
    path = Path(path)
    spec = read_spec(path)
    return get_family(spec.family).adapted.load(model, path, spec, trainable)


def _domain_of_track(track: Any) -> str | None:
    from harness.tasks import registry

    return next((d.id for d in registry.all_domains() if d.track == track), None)
