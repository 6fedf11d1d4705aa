"""The recall world: a calibration variant of the synthetic world with a capacity mechanism built in.

    rows = recall_rows("aisle_number", keys=64, facts="per_key", seed=0)   # train rows = eval rows

Why it exists: an instrument is trusted when it finds an effect that exists by construction and no
effect where there is none (sweeps/calibration.yaml, sweeps/calibration_null.yaml). Here the effect
is a diversity x capacity interaction, and the mechanism is memory:

  * Eight recall subtasks, two per capability domain. Each asks for an arbitrary stock-keeping number
    (1-8) of a catalogue product: "Which aisle number stocks 'Brio red glass mug'?" -> "7".
  * facts: per_key (mechanism on). Every (subtask, product) pair has its own random number, drawn from
    a hash, so nothing in pretraining or in another subtask predicts it: only the adapter can hold it.
    A trial trained on d subtasks must store d x keys facts. A low LoRA rank saturates when many
    subtasks are trained and not when few are, so the gain from adding subtasks grows with rank: a
    positive diversity x capacity interaction.
  * facts: per_subtask (mechanism off). Each subtask's number is the same for every product, and no
    two subtasks share one: one fact per subtask, which any rank holds. Adding subtasks gains the
    same at every rank: no interaction.

Evaluation asks the same facts with the same words (closed-book recall), so a sweep over this world
turns the contamination check off (validation says so). Scoring is ShopBench generation with
ROUGE-L: 1 for the right number, 0 otherwise. Pure Python; rows are deterministic in the seed.
"""

from __future__ import annotations

from typing import Any, Literal

from harness.errors import InputError, unknown_name_message
from harness.tasks import registry
from harness.tasks.world import build_world, stable_hash

RECALL_SOURCE = "builtin:recall"
RECALL_HELDOUT = "builtin:recall-heldout"
FactLayout = Literal["per_key", "per_subtask"]
N_VALUES = 8  # answers are the numbers 1..8: a model that only learned the format scores about 1/8

# subtask id -> (domain, the number it asks for)
RECALL_SUBTASKS: dict[str, tuple[str, str]] = {
    "aisle_number": ("concept", "aisle"),
    "shelf_number": ("concept", "shelf"),
    "bin_number": ("reasoning", "bin"),
    "rack_number": ("reasoning", "rack"),
    "dock_number": ("behavior", "loading dock"),
    "bay_number": ("behavior", "storage bay"),
    "locker_number": ("multilingual", "pickup locker"),
    "gate_number": ("multilingual", "delivery gate"),
}


def recall_subtasks() -> dict[str, str]:
    """subtask id -> domain, in declaration order (two per domain)."""
    return {sid: domain for sid, (domain, _) in RECALL_SUBTASKS.items()}


def max_keys(seed: int = 0) -> int:
    """How many distinct products the world of `seed` can key facts on."""
    return len({p.short_title for p in build_world(seed).products})


def recall_rows(subtask: str, *, keys: int, facts: FactLayout, seed: int = 0) -> list[dict[str, Any]]:
    """The `keys` recall rows of one subtask: one per product, each with its number. Training rows
    and evaluation rows are these same rows."""
    if subtask not in RECALL_SUBTASKS:
        raise InputError(unknown_name_message("recall subtask", subtask, RECALL_SUBTASKS))
    domain, thing = RECALL_SUBTASKS[subtask]
    track = registry.get_domain(domain).track
    return [{"input_field": f"Which {thing} number stocks '{title}'?\nOutput: ",
             "output_field": str(_number(subtask, title, facts, seed)),
             "task_type": "generation", "metric": "rougel", "task_name": subtask, "track": track,
             "domain": domain, "subtask": subtask, "row_id": f"{subtask}:recall:s{seed}:{facts}:{i}"}
            for i, title in enumerate(_key_titles(keys, seed))]


def _key_titles(keys: int, seed: int) -> list[str]:
    titles = sorted({p.short_title for p in build_world(seed).products},
                    key=lambda t: stable_hash(f"recall|{seed}|{t}"))
    if keys > len(titles):
        raise InputError(f"data.recall.keys: {keys} products asked for, the world (seed {seed}) has "
                         f"{len(titles)} distinct ones; use at most {len(titles)}")
    return titles[:keys]


def _number(subtask: str, title: str, facts: FactLayout, seed: int) -> int:
    if facts == "per_subtask":
        return _subtask_numbers(seed)[subtask]
    return stable_hash(f"recall-fact|{seed}|{subtask}|{title}") % N_VALUES + 1


def _subtask_numbers(seed: int) -> dict[str, int]:
    """per_subtask: a seeded permutation of 1..8 over the eight subtasks, so no two share a number.
    Shared numbers let a trial that answers every recall prompt with its own subtasks' number score
    on an untrained subtask, more often at some ranks than others: an interaction the null must not
    have (measured: +0.0069, 95% CI [0.0000004, 0.0137] with hashed numbers that collided)."""
    order = sorted(RECALL_SUBTASKS, key=lambda sid: stable_hash(f"recall-fact|{seed}|{sid}"))
    return {sid: k + 1 for k, sid in enumerate(order)}
