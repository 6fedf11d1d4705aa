"""Answer renderings: multiple-choice as the option number (ShopBench) or as the option's text."""

from __future__ import annotations

from harness.data.prompting import option_texts, render_answer

MC = {"input_field": "Which one?\n0. red mug\n1. blue bowl\n2. It cannot be inferred.\nAnswer: ",
      "output_field": 1, "task_type": "multiple-choice", "metric": "accuracy"}


def test_option_texts_reads_the_last_numbered_run():
    prompt = "Steps:\n1. look\n2. buy\nOptions:\n0. a b\n1. c\n2. d e f \nAnswer:"
    assert option_texts(prompt) == ["a b", "c", "d e f"]
    assert option_texts("no options here") == []


def test_multiple_choice_renders_as_number_or_option_text():
    assert render_answer(MC) == "1"
    assert render_answer(MC, "option_text") == "blue bowl"
    broken = {**MC, "output_field": 7}  # an answer past the listed options keeps the number
    assert render_answer(broken, "option_text") == "7"


def test_other_task_types_ignore_the_multiple_choice_form():
    row = {"input_field": "x", "output_field": [3, 1, 2], "task_type": "retrieval", "metric": "hit rate@3"}
    assert render_answer(row, "option_text") == render_answer(row) == "3,1,2"
