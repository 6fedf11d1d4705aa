"""Parsers against hand-worked cases, including the corners of int() and str.isnumeric()."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.evaluate.parsers import (MAX_RESPONSE_CHARS, PARSERS, parse_generation,
                                      parse_multiple_choice, parse_ner, parse_ranking,
                                      parse_response, parse_retrieval)
from harness.tasks.schema import TASK_TYPES


def test_every_task_type_has_a_parser():
    assert set(PARSERS) == set(TASK_TYPES)


@pytest.mark.parametrize("response, expected", [
    ("2", 2),
    ("  3) because it fits", 3),
    ("\n\t4", 4),
    ("12", 1),  # only the first character counts
    ("a", -1),
    ("Answer: 2", -1),
    ("", -1),  # the organisers' code raised IndexError here; DESIGN says -1
    ("   ", -1),
    ("\u0663", 3),  # ARABIC-INDIC DIGIT THREE: int() accepts any Unicode decimal digit
    ("\u00b3", -1),  # SUPERSCRIPT THREE is a digit but not decimal: int() refuses it
])
def test_multiple_choice(response, expected):
    assert parse_multiple_choice(response) == expected


@pytest.mark.parametrize("response, expected", [
    ("1, 2, 3, 4, 5", [1, 2, 3, 4, 5]),
    ("[1, 2, 3, 4, 5]", [1, 2, 3, 4, 5]),  # brackets are filtered out
    ("1, 2, 2, 3", []),  # a duplicate empties the list
    ("1, 4, 5, aicrowd, 6", [1, 4, 5]),  # 6 > 5 is dropped
    ("1, 9, 2, 3, 4, 5", [1, 2, 3, 4, 5]),  # out-of-range pieces go before the first five are taken
    ("5, 4, 3, 2, 1, 1", [5, 4, 3, 2, 1]),  # a repeat after the first five does not count
    ("1 2", []),  # int("1 2") fails: no comma, no numbers
    ("1 2, 3", [3]),
    (" 3 ,  1", [3, 1]),  # int() accepts surrounding spaces
    ("0, 1", [0, 1]),  # 0 passes the <= 5 check (NDCG reads it as the last candidate)
    ("1,\n2", [1, 2]),  # newlines are removed, not kept
    ("1\n2", []),  # ... so this is "12", which is > 5
    ("1.5, 2", [2]),  # "." is removed: "15" > 5
    ("-1, 2", [1, 2]),  # "-" is removed
    ("\u00bd, 2", [2]),  # VULGAR FRACTION ONE HALF: isnumeric() but int() refuses it
    ("\uff11, \uff12", [1, 2]),  # full-width digits are decimal
    ("", []),
])
def test_ranking(response, expected):
    assert parse_ranking(response) == expected


@pytest.mark.parametrize("response, expected", [
    ("100, 200, 300, 400", [100, 200, 300]),  # first three, no range check
    ("2, 2, 7", [2, 2, 7]),  # no de-duplication
    ("Answer: 3, 7, 11.", [3, 7, 11]),
    ("1 2, 3", [3]),
    ("100, 200, jjhg", [100, 200]),
    ("", []),
])
def test_retrieval(response, expected):
    assert parse_retrieval(response) == expected


@pytest.mark.parametrize("response, expected", [
    ("['New York', 'ShopBench']", ["New York", "ShopBench"]),
    ("[' boot ']", [" boot "]),  # a literal list is returned as written
    ("[]", []),  # an empty literal list is a valid empty answer
    ("New York, ShopBench , Amazon", ["New York", "ShopBench", "Amazon"]),
    ("[New York, ShopBench]", ["[New York", "ShopBench]"]),  # not a literal: split on commas
    ("a,, b,", ["a", "b"]),  # empty pieces dropped (DESIGN; the organisers kept them)
    ("", []),
    ("['a', 1]", ["['a'", "1]"]),  # not all strings: fall back to commas
    ("('a', 'b')", ["('a'", "'b')"]),  # a tuple is not a list
    ("{[1]: 2}", ["{[1]: 2}"]),  # literal_eval raises TypeError here; still falls back
    ("boot", ["boot"]),
])
def test_ner(response, expected):
    assert parse_ner(response) == expected


def test_generation_strips_whitespace():
    assert parse_generation("  A red shoe. \n") == "A red shoe."


def test_truncation_happens_before_parsing():
    assert parse_generation(" " + "a" * 6000) == "a" * (MAX_RESPONSE_CHARS - 1)
    assert parse_ranking("x" * (MAX_RESPONSE_CHARS - 1) + "1, 2") == [1]
    assert parse_retrieval("x" * MAX_RESPONSE_CHARS + "1, 2") == []
    assert parse_ner("a, " * 3000) == ["a"] * (MAX_RESPONSE_CHARS // 3 + 1)


def test_parse_response_dispatches_and_rejects_unknown_types():
    assert parse_response("retrieval", "1, 2") == [1, 2]
    with pytest.raises(InputError, match="did you mean 'ranking'"):
        parse_response("ranknig", "1")
