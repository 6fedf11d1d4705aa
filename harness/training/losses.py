"""Causal-LM loss without the full-vocabulary logits: a drop-in for `model(**batch, use_cache=False).loss`.

    loss = causal_lm_loss(model, batch)                       # padded (attention_mask) or packed (position_ids)
    loss = causal_lm_loss(model, batch, chunk_tokens=4096, impl="fused")
    net = ChunkedLossModel(model); loss = net(**batch).loss    # the same as a module (wrap this in DDP)

transformers computes `lm_head` over every position of the batch and upcasts the logits to fp32 before
the cross-entropy: for the Qwen2.5 vocabulary (152k) that is 0.6 MB of fp32 logits per token, plus the
same again for their gradient. Here the decoder runs to hidden states, only the positions whose
(shifted) label is not -100 go on to the LM head, and those go chunk by chunk:

- Response-only labels make the selection the big saving: on the synthetic world's instruction rows
  7% of the positions carry a label, so the LM head (27% of the Qwen2.5-0.5B forward FLOPs) shrinks
  14-fold and the fp32 logits with it.
- `impl="checkpoint"`: each chunk's lm_head + cross-entropy runs under torch.utils.checkpoint, so the
  backward keeps one chunk's logits at a time (recomputing them: one extra LM-head matmul per chunk).
- `impl="fused"`: each chunk's gradient is computed in the forward pass (softmax - one-hot, times the
  head weight) and only the hidden-size gradient is kept, so there is no recompute (the Liger-style
  fused linear cross-entropy, in plain PyTorch). Needs a plain nn.Linear head (no LoRA on lm_head).

The value and the gradients equal transformers' ForCausalLMLoss (mean over supervised tokens, logits
computed in the model dtype and upcast to fp32), up to the float reassociation of smaller matmuls.
Nothing here knows about peft beyond unwrapping it: the LoRA layers live inside the decoder.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
Impl = Literal["checkpoint", "fused"]


def unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM (XForCausalLM) inside DDP, ChunkedLossModel, peft and torch.compile
    wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    causal = model
    while True:  # DDP / ChunkedLossModel -> PeftModel -> LoraModel -> XForCausalLM; OptimizedModule -> original
        if isinstance(causal, DistributedDataParallel):
            causal = causal.module
        elif isinstance(causal, ChunkedLossModel):
            causal = causal.model
        elif hasattr(causal, "_orig_mod"):
            causal = causal._orig_mod
        elif callable(getattr(causal, "get_base_model", None)):
            causal = causal.get_base_model()
        else:
            return causal


def causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder, lm_head) of a causal LM, through peft and torch.compile wrappers.

    The decoder is the module that returns `last_hidden_state` (Qwen2Model, LlamaModel, ...); the head
    is the output embedding, which for tied-embedding models (Qwen2.5 up to 3B) shares its weight with
    the input embedding, so using the module as it is handles the tie.
    """
    causal = unwrap_causal_lm(model)
    get_decoder, get_head = getattr(causal, "get_decoder", None), getattr(causal, "get_output_embeddings", None)
    decoder = get_decoder() if callable(get_decoder) else getattr(causal, "model", None)
    head = get_head() if callable(get_head) else None
    if decoder is None or head is None:
        raise TypeError(f"{type(causal).__name__} has no decoder/lm_head pair; use model(**batch).loss")
    problem = logits_postprocessing(causal)
    if problem:
        raise NotImplementedError(f"{problem} is not applied by the chunked loss; use train.loss: plain")
    return decoder, head


# Config fields with which a transformers causal LM changes its logits after the LM head (softcapping,
# scaling), which the chunked loss does not repeat: Gemma 2/3, Cohere, Granite and HyperCLOVA X
# (logits_scaling: divided by one, multiplied by the other), Falcon-H1, Muse. Checked on the config and
# its text_config (multimodal wrappers).
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier",
                        "output_multiplier")


def logits_postprocessing(model: nn.Module) -> str | None:
    """"field=value" when `model` post-processes its logits in a way the chunked loss would miss, else None."""
    config = getattr(unwrap_causal_lm(model), "config", None)
    for cfg in (config, getattr(config, "text_config", None)):
        for attr in LOGIT_POSTPROCESSING:
            if getattr(cfg, attr, None) not in (None, 1, 1.0):
                return f"{attr}={getattr(cfg, attr)}"
    return None


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor], chunk_tokens: int = 2048, *,
                   impl: Impl = "checkpoint", num_items_in_batch: int | torch.Tensor | None = None,
                   select_labelled: bool = True) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions of `batch`, as `model(**batch).loss`.

    batch: input_ids and labels, plus attention_mask (padded) or position_ids (packed), as the
    collators of harness.training.batching make them. num_items_in_batch: divide the summed loss by this instead of
    the batch's own supervised-token count (for token-weighted gradient accumulation).
    select_labelled=False sends every position through the head, chunked (the same value; only there
    to measure what dropping the unlabelled positions saves; impl="checkpoint" only).
    """
    decoder, head = causal_lm_parts(model)
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    # Position t predicts token t+1, as transformers shifts (the last position predicts nothing).
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    keep = targets != IGNORE_INDEX
    if select_labelled:
        total = selected_cross_entropy(hidden[keep], targets[keep], head, chunk_tokens, impl=impl)
    elif impl == "checkpoint":  # cross_entropy skips the -100 targets itself
        total = selected_cross_entropy(hidden.flatten(0, -2), targets.flatten(), head, chunk_tokens)
    else:
        raise ValueError("select_labelled=False needs impl='checkpoint'")
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    return total / count  # no labelled position: 0 / 0 = nan, as transformers gives


class ChunkedLossModel(nn.Module):
    """`model` whose forward returns `causal_lm_loss` as `.loss`: the drop-in for code that calls
    `net(**batch, use_cache=False).loss`, and the module to hand DistributedDataParallel.

    DDP syncs gradients only for work done inside its own forward; causal_lm_loss calls the decoder
    and the head directly, which from outside a DDP wrapper would bypass it. Wrapped here, the whole
    loss runs in DDP's forward. Parameters are the wrapped model's own (nothing is copied).
    """

    def __init__(self, model: nn.Module, chunk_tokens: int = 2048, impl: Impl = "checkpoint"):
        super().__init__()
        self.model, self.chunk_tokens, self.impl = model, chunk_tokens, impl

    def forward(self, use_cache: bool = False, num_items_in_batch: Any = None, **batch: torch.Tensor) -> Any:
        from transformers.modeling_outputs import CausalLMOutput

        loss = causal_lm_loss(self.model, batch, self.chunk_tokens, impl=self.impl,
                              num_items_in_batch=num_items_in_batch)
        return CausalLMOutput(loss=loss)


def selected_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module,
                           chunk_tokens: int = 2048, *, impl: Impl = "checkpoint") -> torch.Tensor:
    """Summed cross-entropy of head(hidden) (n x vocab, never all at once) against targets (n,), in fp32.

    targets must hold real token ids only (select the labelled positions first, as causal_lm_loss does).
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if hidden.shape[0] == 0:
        return hidden.sum().float() * 0  # a zero that still backpropagates
    if impl == "fused":
        if type(head) is not nn.Linear:
            raise TypeError(f"impl='fused' needs a plain nn.Linear head, got {type(head).__name__}")
        return _FusedLinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk_tokens)
    if impl != "checkpoint":
        raise ValueError(f"impl must be 'checkpoint' or 'fused', got {impl!r}")
    # The recompute needs the RNG state saved and restored only if the head draws random numbers (dropout).
    deterministic = not any(isinstance(m, nn.Dropout) and m.p > 0 for m in head.modules())
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_tokens):
        piece = (hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens])
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, *piece, use_reentrant=False,
                                       preserve_rng_state=not deterministic)
        else:
            total = total + _chunk_loss(head, *piece)
    return total


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum CE(hidden @ W.T + b, targets), its gradients computed chunk by chunk in the forward pass.

    Saved for backward: d loss / d hidden (n x hidden) and, only when W or b trains, their fp32
    gradients. The logits of one chunk (fp32, chunk x vocab) are the largest temporary.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            h, y = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if not (need_h or need_w or need_b):
                continue
            # d CE / d logits = softmax - one_hot, cast to the model dtype as autograd would (.float()'s backward)
            probs = logits.sub_(lse[:, None]).exp_()
            probs[torch.arange(len(y), device=y.device), y] -= 1
            d_logits = probs.to(hidden.dtype)
            if need_h:
                grad_h[start : start + chunk_tokens] = d_logits @ weight
            if need_w:
                grad_w += (d_logits.T @ h).float()
            if need_b:
                grad_b += d_logits.float().sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out.to(torch.float32)
        out_h = grad_h * scale.to(grad_h.dtype) if grad_h is not None else None
        out_w = (grad_w * scale).to(ctx.dtypes[0]) if grad_w is not None else None
        out_b = (grad_b * scale).to(ctx.dtypes[1]) if grad_b is not None else None
        return out_h, out_w, out_b, None, None
