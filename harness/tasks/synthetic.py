"""Synthetic ShopBench rows for every registered subtask, drawn from one seeded world.

    from harness.tasks.synthetic import build_world, generate_rows, world_corpus
    rows = generate_rows("unit_price", "train", n=400, seed=0)     # list of ShopBench row dicts
    eval_rows = generate_rows("unit_price", "heldout", n=50, seed=0)
    docs = world_corpus(seed=0)                                    # pretraining text, no task prompts

How rows are drawn (see `_stream`): each subtask has a pool of keys (products, queries, reviews,
sessions, (attribute, category) pairs) restricted to one split, visited in a seeded order for a few
rounds; a per-row `random.Random` fills in the question. A row whose normalised prompt was already
produced is skipped, so rows are distinct; since the key is readable from the prompt and splits are a
hash of the key, equal prompts can never land in both splits. Rows are deterministic for (subtask,
split, seed) and prefix-stable in n. Multiple-choice answers cycle through a seeded permutation of
0..3 per block of four rows, so answer positions are balanced exactly over every multiple of four.

Output fields follow ShopBench: multiple-choice -> option index (options numbered from 0); retrieval ->
the 1-based indices of the right candidates, ascending; ranking -> one relevance grade per listed
candidate, in list order (3 exact match, 2 substitute, 1 complement, 0 unrelated), which is what NDCG
reads; the text a model should answer for ranking is the 1-based indices sorted by grade, descending.

Prompts are short (under ~350 characters) and several tasks can be partly solved by reading the prompt
(attribute in the title, matching nouns, prices shown, lexicon words); others need the world knowledge
that `world_corpus` carries (definitions, complements, material facts, aspect vocabulary).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import InputError
from harness.tasks import registry
from harness.tasks.world import (
    ASPECTS,
    ATTRIBUTE_VALUES,
    CATEGORIES,
    DEPARTMENTS,
    LANGUAGES,
    NEEDS,
    RATINGS,
    WORLD_VERSION,
    Category,
    Product,
    World,
    build_world,
    in_text,
    render_query,
    translate_title,
    translate_word,
    world_corpus,
)

__all__ = ["SPLITS", "WORLD_VERSION", "build_world", "generate_rows", "row_capacity", "world_corpus"]

SPLITS = ("train", "heldout")
CANNOT_INFER = "It cannot be inferred."
NER_TYPES = ("product type", "brand", "color", "material", "audience")
Made = tuple[str, Any] | None  # (prompt, output_field), or None when this key cannot make a row now


# ---------------------------------------------------------------------------------------------
# Prompt pieces


def _mc(question: str, options: Sequence[str]) -> str:
    """The ShopBench multiple-choice layout: options numbered from 0, then 'Answer: '."""
    return "\n".join([question, *(f"{i}. {o}" for i, o in enumerate(options))]) + "\nAnswer: "


def _numbered(items: Sequence[str]) -> str:
    """Retrieval and ranking lists are numbered from 1, as in ShopBench."""
    return "\n".join(f"{i}. {x}" for i, x in enumerate(items, 1))


def _place(correct: str, distractors: Sequence[str], pos: int, rng: random.Random) -> list[str]:
    others = list(distractors)
    rng.shuffle(others)
    return others[:pos] + [correct] + others[pos:]


def _pick_list(truth: Sequence[str], distractors: Sequence[str],
               rng: random.Random) -> tuple[list[str], list[int]]:
    """Shuffled candidates and the 1-based indices of the true ones, ascending."""
    items = [(t, True) for t in truth] + [(d, False) for d in distractors]
    rng.shuffle(items)
    return [t for t, _ in items], [i for i, (_, ok) in enumerate(items, 1) if ok]


@functools.lru_cache(maxsize=None)
def _unrelated_names(name: str) -> tuple[str, ...]:
    """Categories that are neither `name`, nor its complements, nor list `name` as their complement."""
    cat = CATEGORIES[name]
    return tuple(c.name for c in CATEGORIES.values()
                 if c.name != name and c.name not in cat.complements and name not in c.complements)


@functools.lru_cache(maxsize=256)
def _far_titles(seed: int, name: str, brief: bool = False) -> tuple[str, ...]:
    """Distinct (brief) short titles of the products in categories unrelated to `name`."""
    world = build_world(seed)
    titles = (_brief(p) if brief else p.short_title
              for c in _unrelated_names(name) for p in world.products_in(c))
    return tuple(dict.fromkeys(titles))


@functools.lru_cache(maxsize=256)
def _far_queries(seed: int, name: str) -> tuple[str, ...]:
    far = set(_unrelated_names(name))
    return tuple(q.text for q in build_world(seed).queries if q.category in far)


def _distinct_titles(products: Sequence[Product], k: int, rng: random.Random, exclude: set[str]) -> list[str]:
    titles = list(dict.fromkeys(p.short_title for p in products if p.short_title not in exclude))
    return rng.sample(titles, k) if len(titles) >= k else []


# ---------------------------------------------------------------------------------------------
# Pools: the keys of one split, in a stable order


def _products(world: World, split: str) -> list[Product]:
    return [p for p in world.products if world.product_split(p) == split]


def _short_titles(world: World, split: str) -> list[Product]:
    """One product per distinct short title."""
    first: dict[str, Product] = {}
    for p in _products(world, split):
        first.setdefault(p.short_title, p)
    return list(first.values())


def _queries(world: World, split: str) -> list:
    return [q for q in world.queries if world.split_of(q.text) == split]


def _queries_with_constraints(world: World, split: str) -> list:
    return [q for q in _queries(world, split) if q.constraints]


def _foreign_queries(world: World, split: str) -> list:
    return [q for q in world.foreign_queries if world.split_of(q.text) == split]


def _reviews(world: World, split: str) -> list:
    return list(world.reviews_in(split))  # a copy: the stream shuffles its keys


def _sessions(world: World, split: str) -> list:
    return [s for s in world.sessions if world.split_of(s.key) == split]


# ---------------------------------------------------------------------------------------------
# concept


def _product_type_explain(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    question = rng.choice((f"Explain the product type of '{p.title}' in one sentence.",
                           f"What kind of product is '{p.title}'? Describe its type briefly."))
    return f"{question}\nOutput: ", world.categories[p.category].definition


def _attribute_pairs(world: World, split: str) -> list[tuple[str, str]]:
    pairs = []
    for cat in world.categories.values():
        for attr in cat.attrs:
            lacking = [c for c in world.categories.values() if attr not in c.attrs]
            if len(lacking) >= 3 and world.split_of(f"{attr}|{cat.name}") == split:
                pairs.append((attr, cat.name))
    return pairs


def _attribute_category(world: World, key: tuple[str, str], rng: random.Random, pos: int) -> Made:
    attr, name = key
    lacking = [c.name for c in world.categories.values() if attr not in c.attrs]
    options = _place(name, rng.sample(lacking, 3), pos, rng)
    question = rng.choice((f"Which product category may have the attribute '{attr}'?",
                           f"Select the category of products that can have the attribute '{attr}'."))
    return _mc(question, options), pos


def _option_sets() -> dict[str, tuple[tuple[str, ...], ...]]:
    """attribute -> fixed four-option lists (three values and CANNOT_INFER), reused across rows as
    ShopBench's attribute questions reuse one option list per question. CANNOT_INFER's slot rotates
    from list to list so every slot can hold the answer."""
    sets, slot = {}, 0
    for attr, values in ATTRIBUTE_VALUES.items():
        if len(values) < 3:
            continue
        chunks = [values[i:i + 3] if i + 3 <= len(values) else values[-3:] for i in range(0, len(values), 3)]
        lists = []
        for chunk in chunks:
            options = list(chunk)
            options.insert(slot % 4, CANNOT_INFER)
            slot += 1
            lists.append(tuple(options))
        sets[attr] = tuple(lists)
    return sets


OPTION_SETS = _option_sets()


def _attribute_infer(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    """Read an attribute off the title; the answer is CANNOT_INFER when the category lacks it."""
    cat = world.categories[p.category]

    def fits(attr: str, options: tuple[str, ...]) -> bool:
        others = [o for o in options if o not in (options[pos], CANNOT_INFER)]
        return options[pos] == (p.attr(attr) or CANNOT_INFER) and not any(in_text(o, p.title) for o in others)

    stated = [(a, o) for a in OPTION_SETS if a in cat.attrs for o in OPTION_SETS[a] if fits(a, o)]
    absent = [(a, o) for a in OPTION_SETS if a not in cat.attrs for o in OPTION_SETS[a] if fits(a, o)]
    choices = absent if rng.random() < 0.2 else stated
    if not choices:
        return None  # no list puts this product's answer in slot `pos`; a later round tries again
    attr, options = rng.choice(choices)
    question = f"The product '{p.title}' appears on a shopping website. What is its {attr}?"
    return _mc(question, options), pos


def _pick_entity(q, rng: random.Random) -> tuple[str, str]:
    """One (entity type, lowercased phrase) of a query, for the two NER subtasks."""
    entities = {t: v.lower() for t, v in q.entities().items() if t in NER_TYPES}
    etype = rng.choice(list(entities))
    return etype, entities[etype]


def _query_ner(world: World, q, rng: random.Random, pos: int) -> Made:
    etype, phrase = _pick_entity(q, rng)
    prompt = (f"Extract the phrases of entity type '{etype}' from the shopping query. "
              f"Separate several with commas.\nQuery: {q.text}\nOutput: ")
    return prompt, [phrase]


def _review_aspect_extract(world: World, r, rng: random.Random, pos: int) -> Made:
    aspect, phrase, _ = rng.choice(r.mentions)
    prompt = (f"Product type: {r.category}\nReview: {r.text}\n"
              f"Copy the phrase of the review that is about {aspect}.\nOutput: ")
    return prompt, phrase


def _aspect_pairs(world: World, split: str) -> list[tuple[str, str]]:
    return [(c.name, a) for c in world.categories.values() for a in c.aspects
            if world.split_of(f"{c.name}|{a}") == split]


def _review_snippet_select(world: World, key: tuple[str, str], rng: random.Random, pos: int) -> Made:
    name, aspect = key
    good, bad = ASPECTS[aspect]
    others = [g for a in world.categories[name].aspects if a != aspect for g in ASPECTS[a][0]]
    items, truth = _pick_list(good, rng.sample(bad, 2) + rng.sample(others, 3), rng)
    prompt = (f"A customer bought {name} and wants to praise its {aspect}. Which 3 review snippets "
              f"would they write? Output 3 numbers separated by commas.\n{_numbered(items)}\nOutput: ")
    return prompt, truth


# ---------------------------------------------------------------------------------------------
# reasoning


def _offer_text(cat: Category, quantity: int, price: float) -> str:
    size = f"pack of {quantity}" if cat.unit == "item" else f"{quantity} {cat.unit}"
    return f"{size} for ${price:.2f}"


def _offers(cat: Category, p: Product, rng: random.Random) -> list[tuple[int, float]] | None:
    """Four (quantity, price) offers whose cheapest unit price beats the next by at least 5%.

    Either the price is shared (the cheapest per unit is the largest quantity) or the quantity is
    (the cheapest is the lowest price): comparisons, not division, which a model of about a million
    parameters cannot do and which would leave the subtask unlearnable by the embedded default."""
    unit = p.price / p.quantity
    sizes = sorted({m * q for q in cat.quantities for m in (1, 2, 3, 4)
                    if cat.unit == "item" or m * q <= 2 * max(cat.quantities)})
    same_price = rng.random() < 0.5
    quantities = rng.sample(sizes, 4) if same_price else [p.quantity] * 4
    if same_price:
        price = unit * sorted(quantities)[1] * rng.uniform(0.9, 1.1)
        offers = [(q, round(price, 2)) for q in quantities]
    else:
        factors = [0.8] + rng.sample((0.95, 1.05, 1.15, 1.3), 3)
        offers = [(q, round(unit * q * f, 2)) for q, f in zip(quantities, factors)]
    per = sorted(pr / q for q, pr in offers)
    return offers if min(pr for _, pr in offers) > 0 and per[0] * 1.05 <= per[1] else None


def _unit_price(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    cat = world.categories[p.category]
    offers = _offers(cat, p, rng)
    if offers is None:
        return None
    offers.sort(key=lambda o: o[1] / o[0])
    texts = [_offer_text(cat, q, pr) for q, pr in offers]
    per = "item" if cat.unit == "item" else f"100 {cat.unit}"
    question = f"Which offer of '{p.short_title}' has the lowest price per {per}?"
    return _mc(question, _place(texts[0], texts[1:], pos, rng)), pos


def _multi_packs(world: World, split: str) -> list[Product]:
    return [p for p in _products(world, split)
            if world.categories[p.category].unit == "item" and p.quantity >= 2]


def _pack_total(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    n, k = p.quantity, rng.randint(2, 6)
    near = {n + k, n * (k + 1), n * (k - 1), (n + 1) * k, (n - 1) * k, n * k + 1, n * k - 1, n * k + 2}
    wrong = sorted(x for x in near if x > 0 and x != n * k)
    options = _place(str(n * k), [str(x) for x in rng.sample(wrong, 3)], pos, rng)
    item = world.categories[p.category].item_word
    question = f"A shopper buys {k} packs of '{p.title}'. How many {item} do they get in total?"
    return _mc(question, options), pos


def _complement_category(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    cat = world.categories[p.category]
    options = _place(rng.choice(cat.complements), rng.sample(_unrelated_names(cat.name), 3), pos, rng)
    question = rng.choice((f"A customer just bought '{p.short_title}'. Which product category are they "
                           "most likely to buy with it?",
                           f"Which category is most often bought together with '{p.short_title}'?"))
    return _mc(question, options), pos


def _needs_of(p: Product) -> list[tuple[str, str, tuple[str, ...]]]:
    """The needs this product fails: (need, attribute, failing values)."""
    return [(need, attr, bad) for need, attr, bad, cats in NEEDS
            if p.category in cats and p.attr(attr) in bad]


def _obstacle_products(world: World, split: str) -> list[Product]:
    return [p for p in _products(world, split) if _needs_of(p)]


def _purchase_obstacle(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    need, attr, bad = rng.choice(_needs_of(p))
    fine = [q.title for q in world.products_in(p.category) if q.attr(attr) not in bad]
    question = (f"A customer shopping for {p.category} needs it to be {need}. "
                "Which product should they avoid?")
    return _mc(question, _place(p.title, rng.sample(fine, 3), pos, rng)), pos


# ---------------------------------------------------------------------------------------------
# behavior

RELATIONS = ("same request", "substitute", "complement", "unrelated")


def _random_query(world: World, category: str, rng: random.Random) -> str:
    p = world.products[rng.choice(world.by_category[category])]
    options = [("brand", p.brand)] + [(a, v) for a, v in p.attrs if a in ("color", "material")]
    picked = rng.sample(options, rng.randint(0, min(2, len(options))))
    return render_query(category, dict(picked), rng.randrange(3))


def _substitute_query(world: World, q, rng: random.Random) -> str:
    cons = dict(q.constraints)
    attr = rng.choice(list(cons))
    cat = world.categories[q.category]
    if attr == "brand":
        choices = sorted({p.brand for p in world.products_in(q.category)} - {cons[attr]})
    else:
        choices = [v for v in cat.attrs[attr] if v != cons[attr]]
    cons[attr] = rng.choice(choices)
    return render_query(q.category, cons, rng.randrange(3))


def _query_relation(world: World, q, rng: random.Random, pos: int) -> Made:
    cat = world.categories[q.category]
    if pos == 0:
        other = render_query(q.category, dict(q.constraints), rng.randrange(3))
    elif pos == 1:
        other = _substitute_query(world, q, rng)
    else:
        pool = cat.complements if pos == 2 else _unrelated_names(cat.name)
        other = _random_query(world, rng.choice(pool), rng)
    if other == q.text:
        return None
    prompt = f"Query A: {q.text}\nQuery B: {other}\nHow is query B related to query A?"
    return _mc(prompt, RELATIONS), pos


def _matches(p: Product, constraints) -> bool:
    return all((p.brand if a == "brand" else p.attr(a)) == v for a, v in constraints)


def _product_ranking(world: World, q, rng: random.Random, pos: int) -> Made:
    cat = world.categories[q.category]
    hits: tuple[list[Product], list[Product]] = ([], [])  # (substitutes, exact matches)
    for p in world.products_in(q.category):
        hits[_matches(p, q.constraints)].append(p)
    exact = _distinct_titles(hits[1], 1, rng, set())
    n_sub = rng.choice((1, 2))
    subs = _distinct_titles(hits[0], n_sub, rng, set())
    comp = _distinct_titles(world.products_in(rng.choice(cat.complements)), 1, rng, set())
    rest = rng.sample(_far_titles(world.seed, cat.name), 3 - n_sub)
    graded = [(t, 3) for t in exact] + [(t, 2) for t in subs] + [(t, 1) for t in comp] + [(t, 0) for t in rest]
    if len(graded) != 5:
        return None
    rng.shuffle(graded)
    prompt = (f"Query: {q.text}\nRank the products by how well they match the query, best first. "
              f"Output 5 numbers separated by commas.\n{_numbered([t for t, _ in graded])}\nOutput: ")
    return prompt, [g for _, g in graded]


def _next_query(world: World, s, rng: random.Random, pos: int) -> Made:
    items, truth = _pick_list(s.next_queries, rng.sample(_far_queries(world.seed, s.category), 4), rng)
    prompt = (f"A shopper searched, in order: {'; '.join(s.queries)}.\nWhich 3 of these queries will "
              f"they search next? Output 3 numbers separated by commas.\n{_numbered(items)}\nOutput: ")
    return prompt, truth


def _brief(p: Product) -> str:
    """A short title without its audience, for long candidate lists."""
    return p.short_title.split(" for ")[0]


def _linked_products(world: World, split: str) -> list[Product]:
    return [p for p in _short_titles(world, split) if len(p.also_bought) == 3]


def _also_bought(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    cat = world.categories[p.category]
    truth = [_brief(world.products[i]) for i in p.also_bought]
    if len(set(truth)) < 3:
        return None
    items, idx = _pick_list(truth, rng.sample(_far_titles(world.seed, cat.name, brief=True), 4), rng)
    prompt = (f"A customer bought '{p.short_title}'. Which 3 of these products will they also buy? "
              f"Output 3 numbers separated by commas.\n{_numbered(items)}\nOutput: ")
    return prompt, idx


def _review_rating(world: World, r, rng: random.Random, pos: int) -> Made:
    if RATINGS.index(r.rating) != pos:
        return None  # this review's answer sits elsewhere; a later round offers it another slot
    prompt = f"Product type: {r.category}\nReview: {r.text}\nHow many stars did the reviewer give?"
    return _mc(prompt, ("1 star", "2 stars", "4 stars", "5 stars")), pos


# ---------------------------------------------------------------------------------------------
# multilingual


def _translatable(world: World, split: str) -> list[tuple[Product, str]]:
    """(product, language) pairs whose translation has at least 4 words: sacreBLEU without effective
    order scores a shorter hypothesis 0 even when it is exact."""
    return [(p, lang) for p in _short_titles(world, split) for lang in LANGUAGES
            if len(translate_title(p, lang).split()) >= 4]


def _title_translate(world: World, key: tuple[Product, str], rng: random.Random, pos: int) -> Made:
    p, lang = key
    prompt = f"Translate the product title into {LANGUAGES[lang]}.\nTitle: {p.short_title}\nOutput: "
    return prompt, translate_title(p, lang)


def _crosslingual_match(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    lang = rng.choice(tuple(LANGUAGES))
    same = world.products_in(p.category)
    near = _distinct_titles([q for q in same if q.brand == p.brand], 2, rng, {p.short_title}) or \
        _distinct_titles(same, 2, rng, {p.short_title})
    far = _distinct_titles([q for q in world.products if q.category != p.category], 1, rng, set())
    if len(near) + len(far) != 3:
        return None
    question = (f"Which English title names the same product as the {LANGUAGES[lang]} title "
                f"'{translate_title(p, lang)}'?")
    return _mc(question, _place(p.short_title, near + far, pos, rng)), pos


def _keywords(lang: str, department: str, noun: str, adjective: str) -> str:
    return ", ".join(translate_word(w, lang) for w in (department, noun, adjective))


def _foreign_keywords(world: World, p: Product, rng: random.Random, pos: int) -> Made:
    lang = rng.choice(tuple(LANGUAGES))
    cat = world.categories[p.category]
    attr = next(a for a in ("color", "scent", "flavor") if a in cat.attrs)
    adj = p.attr(attr)
    other_cat = world.categories[rng.choice([c for c in world.categories if
                                             world.categories[c].department != cat.department])]
    wrong_adj = rng.choice([v for v in cat.attrs[attr] if v != adj])
    wrong_dep = rng.choice([d for d in DEPARTMENTS if d != cat.department])
    options = [_keywords(lang, cat.department, cat.name, wrong_adj),
               _keywords(lang, other_cat.department, other_cat.name, adj),
               _keywords(lang, wrong_dep, cat.name, adj)]
    correct = _keywords(lang, cat.department, cat.name, adj)
    if len({correct, *options}) != 4:
        return None
    question = f"Which keyword set fits the {LANGUAGES[lang]} product '{translate_title(p, lang)}'?"
    return _mc(question, _place(correct, options, pos, rng)), pos


def _foreign_query_ner(world: World, q, rng: random.Random, pos: int) -> Made:
    etype, phrase = _pick_entity(q, rng)
    prompt = (f"Extract the phrases of entity type '{etype}' from this {LANGUAGES[q.lang]} shopping "
              f"query.\nQuery: {q.text}\nOutput: ")
    return prompt, [phrase]


# ---------------------------------------------------------------------------------------------
# The stream


@dataclass(frozen=True)
class _Generator:
    pool: Callable[[World, str], list]  # the split's keys, in a stable order
    make: Callable[[World, Any, random.Random, int], Made]  # (world, key, rng, answer position)
    rounds: int  # passes over the pool before the world counts as exhausted


_GENERATORS: dict[str, _Generator] = {
    "product_type_explain": _Generator(_products, _product_type_explain, 2),
    "attribute_category": _Generator(_attribute_pairs, _attribute_category, 40),
    "attribute_infer": _Generator(_products, _attribute_infer, 6),
    "query_ner": _Generator(_queries, _query_ner, 3),
    "review_aspect_extract": _Generator(_reviews, _review_aspect_extract, 2),
    "review_snippet_select": _Generator(_aspect_pairs, _review_snippet_select, 40),
    "unit_price": _Generator(_products, _unit_price, 3),
    "pack_total": _Generator(_multi_packs, _pack_total, 5),
    "complement_category": _Generator(_short_titles, _complement_category, 4),
    "purchase_obstacle": _Generator(_obstacle_products, _purchase_obstacle, 4),
    "query_relation": _Generator(_queries_with_constraints, _query_relation, 8),
    "product_ranking": _Generator(_queries_with_constraints, _product_ranking, 4),
    "next_query": _Generator(_sessions, _next_query, 6),
    "also_bought": _Generator(_linked_products, _also_bought, 6),
    "review_rating": _Generator(_reviews, _review_rating, 8),
    "title_translate": _Generator(_translatable, _title_translate, 1),
    "crosslingual_match": _Generator(_short_titles, _crosslingual_match, 3),
    "foreign_keywords": _Generator(_short_titles, _foreign_keywords, 3),
    "foreign_query_ner": _Generator(_foreign_queries, _foreign_query_ner, 3),
}


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _answer_position(tag: str, k: int) -> int:
    """Row k's correct option: a seeded permutation of 0..3 per block of four rows."""
    perm = random.Random(f"{tag}|pos|{k // 4}").sample(range(4), 4)
    return perm[k % 4]


def _stream(subtask: registry.Subtask, split: str, seed: int) -> Iterator[dict[str, Any]]:
    world = build_world(seed)
    gen = _GENERATORS[subtask.id]
    tag = f"{seed}|{subtask.id}|{split}"
    keys = gen.pool(world, split)
    random.Random(f"{tag}|order").shuffle(keys)
    track = registry.get_domain(subtask.domain).track
    seen: set[str] = set()
    for j in range(len(keys) * gen.rounds):
        made = gen.make(world, keys[j % len(keys)], random.Random(f"{tag}|{j}"),
                        _answer_position(tag, len(seen)))
        if made is None or _normalise(made[0]) in seen:
            continue
        seen.add(_normalise(made[0]))
        yield {"input_field": made[0], "output_field": made[1], "task_type": subtask.task_type,
               "metric": subtask.metric, "task_name": subtask.id, "track": track,
               "domain": subtask.domain, "subtask": subtask.id,
               "row_id": f"{subtask.id}:s{seed}:{split}:{len(seen) - 1}"}


def _check(subtask_id: str, split: str) -> registry.Subtask:
    subtask = registry.get_subtask(subtask_id)
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return subtask


def generate_rows(subtask_id: str, split: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The first n rows of a subtask's split in the world of `seed` (prefix-stable in n).

    Raises InputError for an unknown subtask or split, or when the world has fewer than n distinct
    rows for that split (the message gives the most it can supply)."""
    subtask = _check(subtask_id, split)
    if not isinstance(n, int) or n < 0:
        raise InputError(f"n must be a non-negative integer, got {n!r}")
    rows = []
    for row in _stream(subtask, split, seed):
        if len(rows) == n:
            break
        rows.append(row)
    if len(rows) < n:
        raise InputError(f"subtask {subtask_id!r}: the synthetic world (seed {seed}) supplies only "
                         f"{len(rows)} distinct {split} rows, {n} were asked for; ask for at most {len(rows)}")
    return rows


@functools.lru_cache(maxsize=256)
def row_capacity(subtask_id: str, split: str, seed: int = 0) -> int:
    """How many distinct rows generate_rows can give for (subtask, split, seed)."""
    return sum(1 for _ in _stream(_check(subtask_id, split), split, seed))
