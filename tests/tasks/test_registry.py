"""The domain and subtask registry: coverage, metadata, immutability, did-you-mean errors."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from harness.errors import InputError
from harness.tasks import registry
from harness.tasks.schema import TASK_TYPES

DOMAIN_IDS = ["concept", "reasoning", "behavior", "multilingual"]


def test_four_domains_in_track_order():
    assert [d.id for d in registry.all_domains()] == DOMAIN_IDS
    tracks = [d.track for d in registry.all_domains()]
    assert len(set(tracks)) == 4 and all(t.startswith("amazon-kdd-cup-24-") for t in tracks)


def test_enough_subtasks_per_domain():
    subtasks = registry.all_subtasks()
    assert len(subtasks) >= 16
    per_domain = Counter(s.domain for s in subtasks)
    assert set(per_domain) == set(DOMAIN_IDS)
    assert min(per_domain.values()) >= 3


def test_every_task_type_is_covered_with_a_valid_metric():
    subtasks = registry.all_subtasks()
    assert {s.task_type for s in subtasks} == set(TASK_TYPES)
    for s in subtasks:
        assert s.metric in TASK_TYPES[s.task_type], s.id
        assert s.description and "." not in s.id


def test_subtasks_of_keeps_declaration_order():
    assert registry.subtasks_of("concept")[0].id == "product_type_explain"
    for d in DOMAIN_IDS:
        assert all(s.domain == d for s in registry.subtasks_of(d))
    assert sum(len(registry.subtasks_of(d)) for d in DOMAIN_IDS) == len(registry.all_subtasks())


def test_lookups_return_the_registered_objects():
    assert registry.get_domain("reasoning").name == "Shopping knowledge reasoning"
    sub = registry.get_subtask("product_ranking")
    assert (sub.domain, sub.task_type, sub.metric) == ("behavior", "ranking", "ndcg")


def test_registries_are_frozen():
    with pytest.raises(TypeError):
        registry.SUBTASKS["new"] = registry.get_subtask("unit_price")  # type: ignore[index]
    with pytest.raises(TypeError):
        registry.DOMAINS["new"] = registry.get_domain("concept")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.get_subtask("unit_price").metric = "ndcg"  # type: ignore[misc]
    registry.all_subtasks().clear()  # a copy: the registry is untouched
    assert len(registry.all_subtasks()) >= 16


def test_unknown_subtask_suggests_the_close_name_and_lists_known():
    with pytest.raises(InputError) as err:
        registry.get_subtask("atribute_infer")
    message = str(err.value)
    assert "did you mean 'attribute_infer'?" in message
    assert "unit_price" in message and "known:" in message


def test_unknown_domain_suggests_the_close_name():
    with pytest.raises(InputError, match="did you mean 'behavior'"):
        registry.get_domain("behaviour")
    with pytest.raises(InputError, match="known: behavior, concept, multilingual, reasoning"):
        registry.subtasks_of("nope")
