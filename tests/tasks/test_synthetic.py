"""The synthetic world and its rows: validity, determinism, split hygiene, balance, answer maths,
and a pretraining corpus that carries facts but no task prompts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from harness.errors import InputError
from harness.tasks import registry, synthetic
from harness.tasks.schema import row_problems
from harness.tasks.world import ATTRIBUTE_VALUES, in_text

SUBTASKS = [s.id for s in registry.all_subtasks()]
MC = [s.id for s in registry.all_subtasks() if s.task_type == "multiple-choice"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _options(prompt: str) -> list[str]:
    return re.findall(r"(?m)^\d\. (.*)$", prompt)


def test_every_registered_subtask_has_a_generator():
    assert set(synthetic._GENERATORS) == set(SUBTASKS)


@pytest.mark.parametrize("split", synthetic.SPLITS)
@pytest.mark.parametrize("subtask", SUBTASKS)
def test_rows_are_valid_shopbench_rows(subtask, split):
    rows = synthetic.generate_rows(subtask, split, 40)
    sub = registry.get_subtask(subtask)
    track = registry.get_domain(sub.domain).track
    assert len(rows) == 40 and len({r["row_id"] for r in rows}) == 40
    for r in rows:
        assert row_problems(r) == [], r
        assert (r["task_name"], r["subtask"], r["domain"], r["track"]) == (subtask, subtask, sub.domain, track)
        assert (r["task_type"], r["metric"]) == (sub.task_type, sub.metric)
        assert len(r["input_field"]) < 400
        _check_output_shape(r)


def _check_output_shape(row):
    prompt, out = row["input_field"], row["output_field"]
    if row["task_type"] == "multiple-choice":
        assert prompt.endswith("\nAnswer: ") and len(_options(prompt)) == 4 and out in range(4)
        return
    assert prompt.endswith("\nOutput: ")
    if row["task_type"] == "ranking":
        assert len(out) == 5 and max(out) == 3
    elif row["task_type"] == "retrieval":
        assert len(out) == 3 and all(1 <= i <= len(re.findall(r"(?m)^\d\. ", prompt)) for i in out)
    elif row["task_type"] == "generation":
        assert 0 < len(out) < 60
    else:
        assert len(out) == 1 and all(_norm(v) in _norm(prompt) for v in out)


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_rows_are_deterministic_and_prefix_stable(subtask):
    long = synthetic.generate_rows(subtask, "train", 60, seed=3)
    assert synthetic.generate_rows(subtask, "train", 30, seed=3) == long[:30]
    other = synthetic.generate_rows(subtask, "train", 30, seed=4)
    assert [r["input_field"] for r in other] != [r["input_field"] for r in long[:30]]


def test_rows_do_not_depend_on_the_process_hash_seed():
    code = ("import json; from harness.tasks import synthetic as s; "
            "print(json.dumps([s.generate_rows(t, 'heldout', 20, seed=1) for t in "
            "('product_ranking', 'next_query', 'foreign_keywords', 'review_rating')]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = [synthetic.generate_rows(t, "heldout", 20, seed=1)
            for t in ("product_ranking", "next_query", "foreign_keywords", "review_rating")]
    assert json.loads(out.stdout) == json.loads(json.dumps(here))


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_train_and_heldout_never_share_a_prompt(subtask):
    train = synthetic.generate_rows(subtask, "train", synthetic.row_capacity(subtask, "train"))
    heldout = synthetic.generate_rows(subtask, "heldout", synthetic.row_capacity(subtask, "heldout"))
    assert len(heldout) >= 200 and len(train) >= 1000  # room for sweeps' volumes and eval sets
    assert not {_norm(r["input_field"]) for r in train} & {_norm(r["input_field"]) for r in heldout}
    assert len({_norm(r["input_field"]) for r in train}) == len(train)


def test_asking_for_more_rows_than_the_world_has_is_an_input_error():
    cap = synthetic.row_capacity("title_translate", "heldout")
    assert len(synthetic.generate_rows("title_translate", "heldout", cap)) == cap
    with pytest.raises(InputError, match=f"at most {cap}"):
        synthetic.generate_rows("title_translate", "heldout", cap + 1)


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError, match="did you mean 'unit_price'"):
        synthetic.generate_rows("unit_prices", "train", 5)
    with pytest.raises(InputError, match="unknown split 'test'"):
        synthetic.generate_rows("unit_price", "test", 5)
    with pytest.raises(InputError, match="non-negative"):
        synthetic.generate_rows("unit_price", "train", -1)
    assert synthetic.generate_rows("unit_price", "train", 0) == []


@pytest.mark.parametrize("subtask", MC)
def test_answer_positions_are_balanced(subtask):
    rows = synthetic.generate_rows(subtask, "train", 200)
    assert Counter(r["output_field"] for r in rows) == {0: 50, 1: 50, 2: 50, 3: 50}


# ---------------------------------------------------------------------------------------------
# Answers agree with the world (hand-checkable maths)


def _rows(subtask, n=100):
    return synthetic.generate_rows(subtask, "train", n) + synthetic.generate_rows(subtask, "heldout", n)


def test_unit_price_answer_is_the_cheapest_per_unit():
    for r in _rows("unit_price"):
        per = [float(p) / float(q) for q, p in
               (re.search(r"(\d+)\D+\$([\d.]+)", o).groups() for o in _options(r["input_field"]))]
        assert per.index(min(per)) == r["output_field"]
        assert sorted(per)[0] * 1.05 <= sorted(per)[1] * 1.0001


def test_unit_price_needs_a_comparison_not_a_division():
    """Offers share either their price or their quantity: a tiny model can compare numbers, not divide."""
    for r in _rows("unit_price"):
        offers = [re.search(r"(\d+)\D+\$([\d.]+)", o).groups() for o in _options(r["input_field"])]
        quantities, prices = {q for q, _ in offers}, {p for _, p in offers}
        assert len(quantities) == 1 or len(prices) == 1, r["input_field"]


def test_pack_total_answer_multiplies_packs_by_pack_size():
    for r in _rows("pack_total"):
        k = int(re.search(r"buys (\d+) packs", r["input_field"]).group(1))
        n = int(re.search(r"pack of (\d+)'", r["input_field"]).group(1))
        assert _options(r["input_field"])[r["output_field"]] == str(n * k)


def test_attribute_infer_answer_is_in_the_title_or_cannot_be_inferred():
    for r in _rows("attribute_infer"):
        title = re.search(r"'(.*)'", r["input_field"]).group(1)
        answer = _options(r["input_field"])[r["output_field"]]
        assert answer == synthetic.CANNOT_INFER or answer in title
        others = [o for o in _options(r["input_field"]) if o not in (answer, synthetic.CANNOT_INFER)]
        assert not any(in_text(o, title) for o in others)


def test_product_type_answers_are_category_definitions():
    world = synthetic.build_world(0)
    for r in _rows("product_type_explain"):
        title = re.search(r"'(.*)'", r["input_field"]).group(1)
        product = next(p for p in world.products if p.title == title)
        assert r["output_field"] == world.categories[product.category].definition


def test_review_rating_answer_matches_the_review():
    world = synthetic.build_world(0)
    rating = {(rv.category, rv.text): rv.rating for rv in world.reviews}
    for r in _rows("review_rating"):
        cat, text = re.search(r"Product type: (.*)\nReview: (.*)\n", r["input_field"]).groups()
        assert (1, 2, 4, 5)[r["output_field"]] == rating[(cat, text)]


def test_ranking_grades_follow_the_query():
    for r in _rows("product_ranking", 40):
        assert sorted(r["output_field"], reverse=True)[:2] == [3, 2] and 1 in r["output_field"]


# ---------------------------------------------------------------------------------------------
# The pretraining corpus


@pytest.fixture(scope="module")
def corpus() -> str:
    return "\n\n".join(synthetic.world_corpus(0))


def test_corpus_has_no_task_prompts_and_option_lists_only_in_drills(corpus):
    assert "Output:" not in corpus
    drills = [d for d in synthetic.world_corpus(0) if d.startswith("Drill: ")]
    others = "\n".join(d for d in synthetic.world_corpus(0) if not d.startswith("Drill: "))
    assert drills and all("\nAnswer: " in d for d in drills)  # the layout lives in the drills alone
    assert "Answer:" not in others and not re.search(r"(?m)^\d+\. ", others)
    for sub in SUBTASKS:
        for r in synthetic.generate_rows(sub, "heldout", 24):
            assert r["input_field"].strip() not in corpus
            first_line = r["input_field"].split("\n")[0]
            assert first_line not in corpus or len(first_line) < 25, (sub, first_line)


def test_drills_answer_with_the_right_option_text_or_the_bracketed_span():
    """The drills answer the way `mc_answer: option_text` trains: with the option's text, not its number."""
    world = synthetic.build_world(0)
    train_reviews = {r.text for r in world.reviews if world.split_of(r.key) == "train"}
    titles = {p.title.replace(",", "") for p in world.products}
    kinds = set()
    for d in (d for d in synthetic.world_corpus(0) if d.startswith("Drill: ")):
        answer = d.rsplit("\nAnswer: ", 1)[1]
        if d.startswith("Drill: copy"):
            text = re.search(r"\nText: (.*)\n", d).group(1)
            assert f"[{answer}]" in text and text.replace(f"[{answer}]", answer) in train_reviews | titles
            kinds.add("copy")
        else:
            options = _options(d)
            assert len(options) == 4 and options.count(answer) == 1, d
            kinds.add("choice")
    assert kinds == {"copy", "choice"}


def test_mention_drills_name_exactly_one_word_of_the_title_some_against_its_own_kind():
    """'Which of these words is in the title?': the answer is in it and no distractor is, so only reading
    the title answers it; in part of them all four options are values of one attribute (as
    attribute_infer's options are), so the kind of word gives nothing away."""
    same_kind = 0
    for d in (d for d in synthetic.world_corpus(0) if d.startswith("Drill: which of these words is in")):
        title = re.search(r"is in '(.*)'\?\n", d).group(1)
        options, answer = _options(d), d.rsplit("\nAnswer: ", 1)[1]
        assert [o for o in options if in_text(o, title)] == [answer], d
        same_kind += any(set(options) <= set(values) for values in ATTRIBUTE_VALUES.values())
    assert same_kind >= 300


def test_corpus_leaves_out_heldout_translations_and_sessions(corpus):
    for r in synthetic.generate_rows("title_translate", "heldout", 100):
        assert f"listed as {r['output_field']}." not in corpus
    world = synthetic.build_world(0)
    held = [s for s in world.sessions if world.split_of(s.key) == "heldout"]
    assert held and not any(f"searched {', then '.join(s.queries)}," in corpus for s in held)


def test_corpus_carries_the_knowledge_tasks_need(corpus):
    world = synthetic.build_world(0)
    for cat in world.categories.values():
        assert cat.definition in corpus
        assert f"often also buy {' and '.join(cat.complements)}" in corpus
    words = set(re.findall(r"[^\W\d_]+", corpus.lower()))
    for r in synthetic.generate_rows("title_translate", "train", 200):
        assert set(re.findall(r"[^\W\d_]+", r["output_field"].lower())) <= words
    assert len(words) < 1000  # a small vocabulary a tiny tokenizer and model can handle


def test_corpus_is_deterministic_and_can_be_cut():
    docs = synthetic.world_corpus(0)
    assert synthetic.world_corpus(0, n_docs=30) == docs[:30]
    assert docs[0].startswith("Category: ")  # ontology pages come first
    assert synthetic.world_corpus(1) != docs
