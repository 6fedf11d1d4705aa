"""How a ShopBench row becomes model text: the prompt, and the answer a model should learn to write.

Training and evaluation both go through `format_prompt`, so a fine-tuned model sees at evaluation
exactly the prompt layout it was trained on. The answer renderings are what the ShopBench parsers
read back (DESIGN.md section 5): an option index, comma-separated indices, comma-separated entities,
or free text.
"""

from __future__ import annotations

import re
from typing import Any, Literal

PromptFormat = Literal["raw", "chat"]

# New-token budgets per task type (generation stops at EOS long before these on a trained model).
MAX_NEW_TOKENS = {
    "multiple-choice": 4,
    "retrieval": 16,
    "ranking": 20,
    "named_entity_recognition": 40,
    "generation": 64,
}


def resolve_format(requested: str, tokenizer: Any) -> PromptFormat:
    """'auto' means the chat template when the tokenizer has one (instruct models), else raw."""
    if requested == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "raw"
    return requested  # type: ignore[return-value]


def format_prompt(input_field: str, tokenizer: Any, fmt: PromptFormat) -> str:
    if fmt == "chat":
        messages = [{"role": "user", "content": input_field}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Raw: the ShopBench prompt as written, up to its last visible character ("Answer:", "Output:");
    # the answer continues it after one space (`continuation`).
    return input_field.rstrip()


def continuation(answer: str, fmt: PromptFormat) -> str:
    """The answer as the model writes it after a `format_prompt` prompt, in training and when options
    are scored. Raw: after one space, as text goes on after "Answer:" anywhere else. Byte-level BPE
    spells a word with its leading space as a different token (" vidrio" vs "vidrio"), so a prompt
    ending in a newline or a trailing space puts every answer in tokens that pretraining text rarely
    uses: builtin:tiny chose the listed option its drills taught at chance that way, and at 0.68-1.0
    with the space in the answer (lm-eval's target delimiter, for the same reason). Chat: the
    template's assistant header already ends the prompt."""
    return " " + answer if fmt == "raw" else answer


McAnswer = Literal["digit", "option_text", "choice_text"]
_OPTION_LINE = re.compile(r"^\s*(\d+)\.\s+(.*\S)\s*$", re.MULTILINE)
LISTED = ("retrieval", "ranking")  # task types that choose among numbered candidates (from 1)
LIST_SEPARATOR = "; "  # between candidate texts in a choice_text answer (titles hold commas)


def _numbered_run(prompt: str, first: int) -> list[str]:
    """The texts of the last run of lines numbered first, first + 1, ... in the prompt."""
    runs: list[list[str]] = []
    for match in _OPTION_LINE.finditer(prompt):
        k = int(match.group(1))
        if k == first:
            runs.append([match.group(2)])
        elif runs and k == first + len(runs[-1]):
            runs[-1].append(match.group(2))
    return runs[-1] if runs else []


def option_texts(prompt: str) -> list[str]:
    """The option texts a multiple-choice prompt lists as '0. ...', '1. ...' (the last such run)."""
    return _numbered_run(prompt, 0)


def candidate_texts(prompt: str) -> list[str]:
    """The candidates a retrieval or ranking prompt lists as '1. ...', '2. ...' (the last such run)."""
    return _numbered_run(prompt, 1)


def _candidate_answer(row: dict[str, Any], order: list[int]) -> str | None:
    """The texts of the candidates at these 1-based indices, joined; None if the prompt lacks one."""
    texts = candidate_texts(row["input_field"])
    if not order or not all(1 <= i <= len(texts) for i in order):
        return None
    return LIST_SEPARATOR.join(texts[i - 1] for i in order)


def render_answer(row: dict[str, Any], mc_answer: McAnswer = "digit") -> str:
    """The training target for a row, in the form the task type's parser reads (multiple-choice with
    mc_answer option_text or choice_text: the chosen option's text, which evaluation maps back to its
    number; retrieval and ranking with choice_text: the chosen candidates' texts, in answer order)."""
    out, task_type = row["output_field"], row["task_type"]
    if task_type == "multiple-choice" and mc_answer != "digit":
        options = option_texts(row["input_field"])
        if int(out) < len(options):
            return options[int(out)]
    if task_type == "multiple-choice":
        return str(int(out))
    if task_type in LISTED:
        # ranking: output_field holds one relevance weight per listed candidate; the answer is the
        # 1-based candidate indices, most relevant first (stable for ties), which is what NDCG reads.
        order = ([i + 1 for i in sorted(range(len(out)), key=lambda i: -out[i])] if task_type == "ranking"
                 else [int(v) for v in out])
        text = _candidate_answer(row, order) if mc_answer == "choice_text" else None
        return text if text is not None else ",".join(str(i) for i in order)
    if task_type == "named_entity_recognition":
        return ", ".join(out)
    if isinstance(out, list):  # generation with several references: learn the first
        return out[0]
    return str(out)
