"""Optional vLLM backend for evaluation: greedy generation on a GPU, with the trained LoRA adapter.

    backend = VLLMBackend("/path/to/base", adapter_path="/path/to/adapter")   # a PEFT save_pretrained dir
    texts = backend.generate(prompts, max_new_tokens=16)
    responses = backend.respond(rows, fmt="raw")   # per-task-type budgets, rows' order

Needs `pip install -e .[gpu]` (vllm); importing this module without it raises MissingDependencyError.
Prompts are tokenised here (no special tokens added, cut from the left) and handed to vLLM as token
ids, so vLLM sees exactly the tokens the transformers path (`harness.evaluate.inference`) sees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import MissingDependencyError

try:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
except ImportError as exc:
    raise MissingDependencyError(
        f"the vLLM evaluation backend needs vllm ({exc}): pip install -e .[gpu]"
    ) from exc

from harness.capacity.families import LORA
from harness.capacity.registry import get_family
from harness.evaluate.inference import respond_by_task_type
from harness.prompting import PromptFormat, format_prompt

# vLLM accepts only these max_lora_rank values; an adapter's rank is rounded up to the next one.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VLLMBackend:
    """One vLLM engine over a base model, optionally with one LoRA adapter applied to every request."""

    def __init__(self, model_path: str, adapter_path: str | None = None, *, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                 max_prompt_tokens: int = 1024, seed: int = 0, **engine_kwargs: Any) -> None:
        # gpu_memory_utilization: fraction of the whole GPU this engine may take (weights + KV cache);
        # lower it when several trials share one GPU.
        lora_kwargs: dict[str, Any] = {}
        self._lora = None
        if adapter_path is not None:
            lora_kwargs = {"enable_lora": True, "max_loras": 1,
                           "max_lora_rank": lora_rank_for_vllm(adapter_rank(adapter_path))}
            self._lora = LoRARequest("adapter", 1, str(adapter_path))
        self.llm = LLM(model=str(model_path), dtype=dtype, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       **lora_kwargs, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_prompt_tokens = max_prompt_tokens

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy continuations of `prompts`, in order."""
        keep = self.max_prompt_tokens
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"][-keep:] for p in prompts]
        token_prompts = [{"prompt_token_ids": x} for x in ids]  # vLLM's TokensPrompt
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True)
        outputs = self.llm.generate(token_prompts, params, lora_request=self._lora, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def respond(self, rows: list[dict[str, Any]], *, fmt: PromptFormat) -> list[str]:
        """One raw response per ShopBench row, like `inference.generate_responses` (vLLM batches itself)."""
        prompts = [format_prompt(r["input_field"], self.tokenizer, fmt) for r in rows]
        return respond_by_task_type(rows, prompts, self.generate, batch_size=max(len(rows), 1))


def adapter_rank(adapter_path: str | Path) -> int:
    """The LoRA rank `r` from a PEFT adapter directory's adapter_config.json. vLLM serves plain LoRA
    only: other capacity families (capacity.json says which) are refused with what to do instead."""
    spec_file = Path(adapter_path) / "capacity.json"
    family = json.loads(spec_file.read_text()).get("family", LORA.name) if spec_file.exists() else LORA.name
    if not get_family(family).vllm_lora:
        raise ValueError(f"{adapter_path}: a {family} adapter; vLLM serves plain LoRA adapters only. "
                         "Evaluate it with the transformers path, or merge it first "
                         "(harness.capacity.adapters.load_adapted(...).merged(); mole cannot be merged)")
    return int(json.loads((Path(adapter_path) / "adapter_config.json").read_text())["r"])


def lora_rank_for_vllm(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")
