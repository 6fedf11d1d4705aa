"""Answer renderings: multiple-choice as the option number (ShopBench) or as the option's text;
retrieval and ranking as candidate numbers or, with choice_text, as the candidates' texts."""

from __future__ import annotations

from harness.data.prompting import candidate_texts, continuation, format_prompt, option_texts, render_answer

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


LISTED_PROMPT = "Rank these.\n1. red mug, large\n2. blue bowl\n3. pen\nOutput: "


def test_candidate_texts_reads_the_last_run_numbered_from_one():
    assert candidate_texts("Options:\n0. a\n1. b\n" + LISTED_PROMPT) == ["red mug, large", "blue bowl", "pen"]
    assert candidate_texts("no candidates") == []


def test_choice_text_writes_the_chosen_candidates_texts_in_answer_order():
    ranking = {"input_field": LISTED_PROMPT, "output_field": [1, 3, 0], "task_type": "ranking", "metric": "ndcg"}
    retrieval = {**ranking, "output_field": [1, 3], "task_type": "retrieval", "metric": "hit rate@3"}
    assert render_answer(ranking, "choice_text") == "blue bowl; red mug, large; pen"  # grades 3, 1, 0
    assert render_answer(retrieval, "choice_text") == "red mug, large; pen"
    assert render_answer(ranking, "option_text") == render_answer(ranking) == "2,1,3"  # option_text: MC only
    assert render_answer(MC, "choice_text") == "blue bowl"
    past_the_list = {**retrieval, "output_field": [1, 4]}  # an index the prompt does not list keeps numbers
    assert render_answer(past_the_list, "choice_text") == "1,4"


def test_raw_prompts_end_at_the_question_and_answers_continue_after_a_space():
    assert format_prompt(MC["input_field"], None, "raw") == MC["input_field"].rstrip()
    assert continuation("blue bowl", "raw") == " blue bowl"
    assert continuation("blue bowl", "chat") == "blue bowl"  # the chat template's header ends the prompt
