"""Capability domains and their subtasks, declared as data and frozen at import.

    from harness.tasks import registry
    registry.get_domain("concept").track        # 'amazon-kdd-cup-24-understanding-shopping-concepts'
    [s.id for s in registry.subtasks_of("reasoning")]
    registry.get_subtask("atribute_infer")      # InputError: ... (did you mean 'attribute_infer'?) ...

Tracks: a domain's `track` is the ShopBench track name the organisers' data carries in its `track`
column (track 1 = concepts, 2 = knowledge reasoning, 3 = user behaviour, 4 = multilingual), so
synthetic rows and real ShopBench rows aggregate under the same track keys.

The tables below are the whole declaration; they are a Python literal rather than a YAML file so the
registry ships without package-data configuration. Subtask ids are snake_case with no dots, so they
work as `a.b=c` override values, file names and W&B names. Every subtask here has a generator in
`harness.tasks.synthetic`; a test checks the two stay in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from harness.errors import InputError, unknown_name_message
from harness.tasks.schema import TASK_TYPES


@dataclass(frozen=True)
class Domain:
    id: str  # what sweeps name: concept, reasoning, behavior, multilingual
    track: str  # ShopBench track name (the `track` column of a row)
    name: str  # human-readable
    description: str


@dataclass(frozen=True)
class Subtask:
    id: str  # what sweeps name and rows carry as task_name and subtask
    domain: str  # a Domain id
    task_type: str  # one of schema.TASK_TYPES
    metric: str  # one of the metrics its task type allows
    description: str  # one line: what the question asks


_DOMAIN_TABLE: tuple[tuple[str, str, str, str], ...] = (
    # id, track, name, description
    ("concept", "amazon-kdd-cup-24-understanding-shopping-concepts", "Shopping concept understanding",
     "product types, attributes, query entities and review aspects"),
    ("reasoning", "amazon-kdd-cup-24-shopping-knowledge-reasoning", "Shopping knowledge reasoning",
     "numbers over packs and prices, complementary categories, purchase obstacles"),
    ("behavior", "amazon-kdd-cup-24-user-behavior-alignment", "User behaviour alignment",
     "query relations, product ranking, sessions, co-purchases and review ratings"),
    ("multilingual", "amazon-kdd-cup-24-multi-lingual-abilities", "Multilingual abilities",
     "Spanish, German and French titles, keywords and queries"),
)

_SUBTASK_TABLE: tuple[tuple[str, str, str, str, str], ...] = (
    # id, domain, task_type, metric, description
    ("product_type_explain", "concept", "generation", "rougel",
     "explain the product type of a titled product in one sentence"),
    ("attribute_category", "concept", "multiple-choice", "accuracy",
     "pick the product category that can have a given attribute"),
    ("attribute_infer", "concept", "multiple-choice", "accuracy",
     "infer an attribute value from a product title, or that it cannot be inferred"),
    ("query_ner", "concept", "named_entity_recognition", "micro f1",
     "extract the brand, color, material, audience or product type from a search query"),
    ("review_aspect_extract", "concept", "generation", "rougel",
     "copy the keyphrase of a review that talks about a given aspect"),
    ("review_snippet_select", "concept", "retrieval", "hit rate@3",
     "pick the 3 review snippets that praise a given aspect of a product type"),
    ("unit_price", "reasoning", "multiple-choice", "accuracy",
     "pick the offer with the lowest price per item, per 100 g or per 100 ml"),
    ("pack_total", "reasoning", "multiple-choice", "accuracy",
     "count the items in several packs of a titled product"),
    ("complement_category", "reasoning", "multiple-choice", "accuracy",
     "pick the category most often bought with a product"),
    ("purchase_obstacle", "reasoning", "multiple-choice", "accuracy",
     "pick the product that fails a customer's need (microwave, washing, water, power)"),
    ("query_relation", "behavior", "multiple-choice", "accuracy",
     "classify two queries as the same request, substitutes, complements or unrelated"),
    ("product_ranking", "behavior", "ranking", "ndcg",
     "rank 5 products by relevance to a query (exact > substitute > complement > unrelated)"),
    ("next_query", "behavior", "retrieval", "hit rate@3",
     "pick the 3 queries a shopper searches next after a session"),
    ("also_bought", "behavior", "retrieval", "hit rate@3",
     "pick the 3 products a customer also buys with a product"),
    ("review_rating", "behavior", "multiple-choice", "accuracy",
     "pick the star rating (1, 2, 4 or 5) a review gave"),
    ("title_translate", "multilingual", "generation", "bleu",
     "translate a product title into Spanish, German or French"),
    ("crosslingual_match", "multilingual", "multiple-choice", "accuracy",
     "pick the English title of a product shown with a Spanish, German or French title"),
    ("foreign_keywords", "multilingual", "multiple-choice", "accuracy",
     "pick the keyword set (department, product type, color) of a non-English product"),
    ("foreign_query_ner", "multilingual", "named_entity_recognition", "micro f1",
     "extract the brand, color, material or product type from a non-English query"),
)


def _load() -> tuple[MappingProxyType, MappingProxyType]:
    """Build and check both registries; a bad table is a bug, so it fails at import."""
    domains = {row[0]: Domain(*row) for row in _DOMAIN_TABLE}
    subtasks = {row[0]: Subtask(*row) for row in _SUBTASK_TABLE}
    problems = [] if len(domains) == len(_DOMAIN_TABLE) and len(subtasks) == len(_SUBTASK_TABLE) \
        else ["duplicate ids in the tables"]
    for s in subtasks.values():
        if s.domain not in domains:
            problems.append(f"subtask {s.id}: unknown domain {s.domain!r}")
        if s.metric not in TASK_TYPES.get(s.task_type, ()):
            problems.append(f"subtask {s.id}: metric {s.metric!r} does not fit task_type {s.task_type!r}")
        if "." in s.id:
            problems.append(f"subtask {s.id}: ids must not contain dots (they clash with a.b=c overrides)")
    if problems:
        raise RuntimeError("task registry: " + "; ".join(problems))
    return MappingProxyType(domains), MappingProxyType(subtasks)


DOMAINS, SUBTASKS = _load()  # id -> Domain, id -> Subtask, in declaration order; read-only


def get_domain(domain_id: str) -> Domain:
    try:
        return DOMAINS[domain_id]
    except (KeyError, TypeError):
        raise InputError(unknown_name_message("domain", str(domain_id), DOMAINS)) from None


def get_subtask(subtask_id: str) -> Subtask:
    try:
        return SUBTASKS[subtask_id]
    except (KeyError, TypeError):
        raise InputError(unknown_name_message("subtask", str(subtask_id), SUBTASKS)) from None


def subtasks_of(domain_id: str) -> list[Subtask]:
    """The subtasks of one domain, in declaration order (unknown domain -> InputError)."""
    get_domain(domain_id)
    return [s for s in SUBTASKS.values() if s.domain == domain_id]


def all_domains() -> list[Domain]:
    return list(DOMAINS.values())


def all_subtasks() -> list[Subtask]:
    return list(SUBTASKS.values())
