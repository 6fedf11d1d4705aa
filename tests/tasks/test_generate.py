"""LLM generation of training rows: prompt styles, parsing, screening, retries, resume, secrecy.

The HTTP tests run a real OpenAI-compatible server on loopback (openai_stub_server.StubLLM) that
serves scripted completions: valid rows, malformed ones, duplicates, and a 429 and a 500 once.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stub server module sits beside this file

from openai_stub_server import StubLLM  # noqa: E402

from harness.errors import InputError  # noqa: E402
from harness.tasks import prompts  # noqa: E402
from harness.tasks.generate import (REJECT_REASONS, GenerationError, GenerationSpec, NearDupIndex,  # noqa: E402
                                    char_ngrams, generate_main, run_generation, jaccard, normalise)
from harness.tasks.prompts import format_mc_prompt  # noqa: E402

SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"


def mc(question: str, options: list[str], answer: int) -> tuple[str, str]:
    return format_mc_prompt(question, options), str(answer)


SEEDS = [
    {"input_field": format_mc_prompt("Which item would a hiker pack to purify stream water?",
                                     ["water filter", "hair dryer", "desk lamp", "rolling pin"]),
     "output_field": 0, "task_type": "multiple-choice", "metric": "accuracy"},
    {"input_field": format_mc_prompt("Which product could potentially feature the attribute 'toy maker'?",
                                     ["giraffe plush toy", "email gift card", "dating guide", "slide sandal"]),
     "output_field": 0, "task_type": "multiple-choice", "metric": "accuracy"},
    {"input_field": format_mc_prompt("What type of product is a cast-iron skillet?",
                                     ["electronics", "cookware", "clothing", "model kit"]),
     "output_field": 1, "task_type": "multiple-choice", "metric": "accuracy"},
]

A = mc("Which product is best for keeping a small dog warm on a long winter walk through deep snow?",
       ["dog sweater", "cat tree", "fish tank", "bird cage"], 0)
A_NEAR = (A[0].replace("small dog", "smal dog"), "0")
B = mc("A shopper wants to brew loose-leaf tea at the office; which item should they buy?",
       ["tea infuser", "garden hose", "car wax", "yoga mat"], 0)
C = mc("Which of these protects a phone screen from scratches?", ["wallet", "stapler", "tempered glass film"], 2)
D = mc("Which accessory lets a laptop connect to two external monitors?", ["docking station", "mouse pad"], 0)
E = mc("Which garment is made to keep a cyclist visible at night?", ["reflective vest", "silk scarf"], 0)
F = mc("What would a baker use to level flour in a measuring cup?", ["spatula", "tyre lever", "paint roller"], 0)
G = mc("Which container keeps soup hot for a lunch at work?", ["vacuum flask", "paper bag"], 0)
X = mc("Which toy suits a toddler learning colours?", ["stacking rings", "chainsaw"], 0)
MISSING = format_mc_prompt("Which gadget measures room humidity?", ["hygrometer", "toaster"])
SEED_COPY = (SEEDS[1]["input_field"], "0")
CHATTER = "\n\nI hope these examples help!"


def render(style: str, items: list) -> str:
    """Completion text for (input, output) pairs; ("MISSING", input) is an example with no output."""
    parts = []
    for item in items:
        if item[0] == "MISSING":
            parts.append(f"<input>\n{item[1]}\n</input>" if style == "delimited" else f"Input: {item[1]}")
        elif style == "delimited":
            parts.append(f"<input>\n{item[0]}\n</input>\n<output>{item[1]}</output>")
        else:
            parts.append(f"Input: {item[0]}\nOutput: {item[1]}")
    return "\n\n".join(parts)


def unique(i: int, k: int) -> tuple[str, str]:
    """A fresh, valid example for request i, slot k: random words, unlike every other example."""
    rng = random.Random(i * 100 + k)
    word = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7))  # noqa: E731
    return mc(f"Which {word()} suits a {word()} {word()} {word()}?", [word() for _ in range(3)], rng.randrange(3))


def script(index: int, body: dict) -> list[str]:
    user = body["messages"][-1]["content"]
    style = "delimited" if "<input>" in user else "plain"
    plan = {
        0: [A, B, C],
        1: [D, SEED_COPY, (X[0], "two")],  # duplicate of a seed; wrong output type
        2: None,  # a refusal: unparseable
        3: [A_NEAR, ("MISSING", MISSING), E],  # near-duplicate; missing output; valid (+ trailing chatter)
        4: [B, (F[0], "7"), F],  # duplicate of an accepted row; answer out of range; valid
        5: [G, unique(5, 1), unique(5, 2)],
    }.get(index, [unique(index, k) for k in range(3)])
    if plan is None:
        return ["Sorry, I cannot help with that request."]
    text = render(style, plan)
    if index == 0:
        text = "Sure! Here are three new examples:\n\n" + text
    if index == 3:
        text += CHATTER  # harmless after </output>; glued onto the last Output: in the plain layout
    return [text]


FAILURES = {1: [429], 2: [500]}  # each succeeds on the second attempt


@pytest.fixture()
def seed_file(tmp_path) -> Path:
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(SEEDS))
    return path


def make_spec(seed_file: Path, out: Path, base_url: str | None, **kw) -> GenerationSpec:
    fields = dict(subtask="gen_mc", task_type="multiple-choice", domain="concept", seed_path=str(seed_file),
                  n_rows=6, style="delimited", backend="openai", model="stub-model", base_url=base_url,
                  temperature=0.7, max_tokens=512, concurrency=2, max_retries=3, backoff_s=0.01,
                  request_timeout_s=10, out_path=str(out), seed=0, examples_per_request=3)
    fields.update(kw)
    return GenerationSpec(**fields)


def reasons(**counts: int) -> dict[str, int]:
    return {r: counts.get(r, 0) for r in REJECT_REASONS}


# ---------------------------------------------------------------------------------------------
# Over HTTP: acceptance by reason for both styles, retries, resume


@pytest.mark.parametrize("style, expected, requests", [
    ("delimited", reasons(unparseable=1, missing_fields=1, wrong_output_type=2, duplicate=2, near_duplicate=1), 5),
    # plain: the closing chatter of request 3 lands in the last Output:, so E is rejected and a 6th request runs
    ("plain", reasons(unparseable=1, missing_fields=1, wrong_output_type=3, duplicate=2, near_duplicate=1), 6),
])
def test_acceptance_by_reason_retries_and_resume(tmp_path, seed_file, style, expected, requests):
    out = tmp_path / f"{style}.jsonl"
    with StubLLM(script, FAILURES) as llm:
        spec = make_spec(seed_file, out, llm.base_url, style=style)
        report = run_generation(spec)
        assert report.accepted == 6 and report.complete
        assert report.rejected_by_reason == expected
        assert report.requests_made == requests
        assert (report.http_attempts, report.retries) == (requests + 2, 2)  # the 429 and the 500 were retried
        assert llm.statuses.count(429) == 1 and llm.statuses.count(500) == 1
        assert report.surplus == (2 if style == "plain" else 0)
        assert report.acceptance_rate == pytest.approx(6 / (6 + sum(expected.values())))
        hits = llm.hits

        again = run_generation(spec)  # same out_path, target already met
        assert llm.hits == hits and again.requests_made == 0 and again.http_attempts == 0
        assert again.accepted == 6 and again.rejected_by_reason == expected

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    assert [r["input_field"] for r in rows[:4]] == [A[0], B[0], C[0], D[0]]
    assert all(r["subtask"] == "gen_mc" and r["domain"] == "concept" and r["metric"] == "accuracy" for r in rows)
    assert {r["track"] for r in rows} == {"amazon-kdd-cup-24-understanding-shopping-concepts"}
    assert len({r["row_id"] for r in rows}) == 6
    rejects = [json.loads(line) for line in out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == sorted(k for k, v in expected.items() for _ in range(v))


def test_requests_carry_the_protocol_fields(tmp_path, seed_file):
    with StubLLM(script) as llm:
        run_generation(make_spec(seed_file, tmp_path / "o.jsonl", llm.base_url, n_rows=3, concurrency=1))
        body = llm.bodies[0]
    assert (body["model"], body["temperature"], body["max_tokens"], body["seed"]) == ("stub-model", 0.7, 512, 0)
    assert "n" not in body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert "a single integer" in user and "<output>" in user and "Write 3 new examples" in user


def test_raising_the_target_resumes_where_it_stopped(tmp_path, seed_file):
    out = tmp_path / "grow.jsonl"
    with StubLLM(script, FAILURES) as llm:
        run_generation(make_spec(seed_file, out, llm.base_url))
        first = llm.requested()
        report = run_generation(make_spec(seed_file, out, llm.base_url, n_rows=9))
        assert sorted(first) == [0, 1, 2, 3, 4]
        assert llm.requested()[len(first):] == [5]  # only the new request index
    assert report.accepted == 9 and report.requests_made == 1 and report.requests_total == 6


def test_an_interrupted_run_resumes_without_repeating_requests(tmp_path, seed_file):
    out = tmp_path / "interrupted.jsonl"
    with StubLLM(script, {2: [503, 503, 503]}) as llm:
        with pytest.raises(GenerationError, match="gave up after 2 attempts.*resume"):
            run_generation(make_spec(seed_file, out, llm.base_url, max_retries=1))
    assert len(out.read_text().splitlines()) == 4  # A, B, C, D from requests 0 and 1 are kept
    with StubLLM(script) as llm:  # the endpoint is back (at a new port: base_url is not part of identity)
        report = run_generation(make_spec(seed_file, out, llm.base_url, max_retries=1))
        assert sorted(llm.requested()) == [2, 3, 4]
    assert report.accepted == 6
    assert report.rejected_by_reason == reasons(unparseable=1, missing_fields=1, wrong_output_type=2,
                                                duplicate=2, near_duplicate=1)


def test_changed_settings_on_the_same_out_path_are_refused(tmp_path, seed_file):
    out = tmp_path / "o.jsonl"
    with StubLLM(script) as llm:
        run_generation(make_spec(seed_file, out, llm.base_url, n_rows=3))
        with pytest.raises(InputError, match=r"different settings \(style\)"):
            run_generation(make_spec(seed_file, out, llm.base_url, n_rows=3, style="plain"))


# ---------------------------------------------------------------------------------------------
# The API key


def test_api_key_is_sent_but_never_logged_or_written(tmp_path, seed_file, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "keyed.jsonl"
    with StubLLM(script, FAILURES) as llm:
        monkeypatch.setenv("HARNESS_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("HARNESS_LLM_MODEL", "stub-model")
        monkeypatch.setenv("HARNESS_LLM_API_KEY", SECRET)
        spec = make_spec(seed_file, out, None, model=None)
        report = run_generation(spec)
        print(report.summary())
        assert set(llm.auth) == {f"Bearer {SECRET}"}
    assert report.accepted == 6
    seen = caplog.text + "".join(capsys.readouterr()) + repr(spec) + json.dumps(report.to_dict())
    assert "retrying" in caplog.text  # the retries were logged...
    assert SECRET not in seen  # ...without the key
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


def test_key_from_the_spec_or_openai_env_and_redacted_errors(tmp_path, seed_file, monkeypatch):
    monkeypatch.delenv("HARNESS_LLM_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with StubLLM(script) as llm:
        run_generation(make_spec(seed_file, tmp_path / "a.jsonl", llm.base_url, n_rows=3))
        assert llm.auth == [f"Bearer {SECRET}"]
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    with StubLLM(script, {0: [401]}, error_body=echo) as llm:
        spec = make_spec(seed_file, tmp_path / "b.jsonl", llm.base_url, n_rows=3, api_key="sk-other-key")
        with pytest.raises(InputError) as err:
            run_generation(spec)
        assert llm.auth == ["Bearer sk-other-key"]  # the spec's key wins over the environment
    assert "HTTP 401" in str(err.value) and "API key" in str(err.value)
    assert "sk-other-key" not in str(err.value) and "sk-other-key" not in repr(spec)


def test_missing_endpoint_settings_name_field_and_variable(tmp_path, seed_file, monkeypatch):
    monkeypatch.delenv("HARNESS_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("HARNESS_LLM_MODEL", raising=False)
    with pytest.raises(InputError, match=r"base_url: not set.*HARNESS_LLM_BASE_URL") as err:
        run_generation(make_spec(seed_file, tmp_path / "o.jsonl", None, model=None))
    assert "HARNESS_LLM_MODEL" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Without HTTP: a scripted backend, the spec, the CLI face


class ScriptedBackend:
    def __init__(self, texts):
        self.texts, self.attempts, self.retries, self.calls = texts, 0, 0, []

    def complete(self, messages, *, n, seed):
        self.attempts += 1
        self.calls.append(seed)
        return [self.texts(seed) for _ in range(n)]


def test_a_useless_model_stops_at_max_requests(tmp_path, seed_file):
    backend = ScriptedBackend(lambda seed: "I don't know.")
    spec = make_spec(seed_file, tmp_path / "o.jsonl", "http://unused", n_rows=2, examples_per_request=1)
    report = run_generation(spec, backend=backend)
    assert not report.complete and report.requests_made == 4 * 2 + 8 == len(backend.calls)
    assert report.rejected_by_reason["unparseable"] == 16


def test_n_completions_per_request_and_ner_rows(tmp_path):
    seeds = tmp_path / "ner.jsonl"
    seeds.write_text(json.dumps({"input_field": "Extract the brand from: nike running shoes\nOutput: ",
                                 "output_field": ["nike"], "task_type": "named_entity_recognition",
                                 "metric": "micro f1"}) + "\n")
    texts = iter(["<input>\nExtract the brand from: puma cap\n</input>\n<output>puma</output>",  # not a list
                  "<input>\nExtract the brand from: adidas socks\n</input>\n<output>['adidas']</output>"])
    backend = ScriptedBackend(lambda seed: next(texts))
    spec = GenerationSpec(subtask="gen_ner", task_type="named_entity_recognition", domain="concept",
                          seed_path=str(seeds), n_rows=1, out_path=str(tmp_path / "ner_out.jsonl"),
                          examples_per_request=1, completions_per_request=2, model="m", base_url="http://x")
    report = run_generation(spec, backend=backend)
    assert report.accepted == 1 and report.rejected_by_reason["wrong_output_type"] == 1
    assert backend.calls == [0] and report.candidates == 2  # one request, two completions
    row = json.loads((tmp_path / "ner_out.jsonl").read_text())
    assert row["output_field"] == ["adidas"] and row["metric"] == "micro f1"


def test_spec_validation_names_fields():
    with pytest.raises(InputError) as err:
        GenerationSpec.parse({"subtask": "x", "task_type": "multiple_choice", "domain": "concpt",
                              "seed_path": "s.json", "n_rows": 0, "out_path": "o.jsonl", "styel": "plain"})
    msg = str(err.value)
    assert "generate.task_type: unknown task_type 'multiple_choice' (did you mean 'multiple-choice'?)" in msg
    assert "generate.domain: unknown domain 'concpt'" in msg
    assert "generate.n_rows: Input should be greater than or equal to 1" in msg
    assert "generate.styel: unknown key (did you mean 'style'?)" in msg
    with pytest.raises(InputError, match=r"generate.metric: 'bleu' does not apply to task_type 'ranking'"):
        GenerationSpec.parse({"subtask": "x", "task_type": "ranking", "metric": "bleu", "domain": "concept",
                              "seed_path": "s.json", "n_rows": 1, "out_path": "o.jsonl"})


def test_generate_main_reads_yaml_with_overrides(tmp_path, seed_file, capsys):
    with StubLLM(script) as llm:
        spec_file = tmp_path / "gen.yaml"
        spec_file.write_text(f"subtask: gen_mc\ntask_type: multiple-choice\ndomain: concept\n"
                             f"seed_path: {seed_file}\nn_rows: 100\nmodel: stub-model\nbase_url: {llm.base_url}\n"
                             f"out_path: {tmp_path / 'cli.jsonl'}\nbackoff_s: 0.01\nexamples_per_request: 3\n")
        code = generate_main(spec_file, ["n_rows=3", "concurrency=1"], as_json=True)
    assert code == 0
    assert json.loads(capsys.readouterr().out)["accepted"] == 3


# ---------------------------------------------------------------------------------------------
# Prompts and parsing


def test_parse_output_per_task_type():
    assert prompts.parse_output("multiple-choice", " 2 ") == (2, None)
    assert prompts.parse_output("multiple-choice", "2. apple")[0] is None
    assert prompts.parse_output("retrieval", "3, 1,7") == ([3, 1, 7], None)
    assert prompts.parse_output("ranking", "2, 1, 3") == ([2, 1, 3], None)
    assert "permutation" in prompts.parse_output("ranking", "1, 1, 3")[1]
    assert prompts.parse_output("named_entity_recognition", "['red', 'shirt']") == (["red", "shirt"], None)
    assert prompts.parse_output("named_entity_recognition", "red, cotton")[0] is None
    assert prompts.parse_output("generation", "one line") == ("one line", None)
    assert "one line" in prompts.parse_output("generation", "two\nlines")[1]


def test_parse_completion_both_styles():
    text = render("delimited", [A, ("MISSING", MISSING), B])
    pairs, rejects = prompts.parse_completion("delimited", text)
    assert pairs == [A, B] and [r.reason for r in rejects] == ["missing_fields"]
    pairs, rejects = prompts.parse_completion("plain", "Example 1:\n" + render("plain", [A, B]) + "\n\nExample 3:")
    assert pairs == [A, B] and rejects == []
    ec_style = ("Find a keyphrase.\nReview: fits well\nOutput:", "fits well")  # an input that ends in Output:
    assert prompts.parse_completion("plain", render("plain", [ec_style]))[0] == [ec_style]
    assert prompts.parse_completion("plain", "no examples")[1][0].reason == "unparseable"


@pytest.mark.parametrize("task_type", sorted(prompts.OUTPUT_FORMATS))
def test_delimited_prompts_spell_out_the_output_format(task_type):
    seed = {"input_field": "q", "output_field": {"multiple-choice": 1, "ranking": [2, 1], "retrieval": [4, 5],
                                                 "named_entity_recognition": ["x"], "generation": "y"}[task_type]}
    task = prompts.TaskBrief("s", task_type, "m")
    delimited = prompts.build_messages("delimited", task, [seed], 4)[1]["content"]
    plain = prompts.build_messages("plain", task, [seed], 4)[1]["content"]
    assert prompts.OUTPUT_FORMATS[task_type] in delimited and "<input>\nq\n</input>" in delimited
    assert "<input>" not in plain and "Input: q\nOutput: " in plain


def test_near_duplicate_index():
    assert jaccard(char_ngrams(normalise(A[0])), char_ngrams(normalise(A_NEAR[0]))) >= 0.9
    index = NearDupIndex(0.9)
    index.add(A[0])
    assert index.check(A[0].upper()) == "duplicate"
    assert index.check(A_NEAR[0]) == "near_duplicate"
    assert index.check(B[0]) is None
    rng = random.Random(0)
    for _ in range(300):  # prefix filtering never misses a pair the exact Jaccard would flag
        words = [rng.choice(["red", "shoe", "lamp", "cable", "mug", "desk", "blue"]) for _ in range(12)]
        text, other = " ".join(words), " ".join(words[:-1] + [rng.choice(["cup", "pen"])])
        idx = NearDupIndex(0.8)
        idx.add(text)
        exact = jaccard(char_ngrams(normalise(text)), char_ngrams(normalise(other))) >= 0.8
        assert (idx.check(other) is not None) == (exact or normalise(text) == normalise(other))


# ---------------------------------------------------------------------------------------------
# The transformers backend, with a tiny randomly initialised model built here


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([s["input_field"] for s in SEEDS] * 5, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    path = tmp_path_factory.mktemp("tiny_llama")
    hf_tok.save_pretrained(path)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_transformers_backend_generates_and_screens(tmp_path, seed_file, tiny_model_dir):
    spec = make_spec(seed_file, tmp_path / "local.jsonl", None, backend="transformers", model=str(tiny_model_dir),
                     n_rows=2, max_requests=2, max_tokens=16, examples_per_request=1, concurrency=2)
    report = run_generation(spec)
    assert report.requests_made == 2 and report.http_attempts == 2
    assert report.accepted == 0 and report.rejected == report.candidates >= 2  # random weights: nothing usable
    raw = (tmp_path / "local.jsonl.raw.jsonl").read_text().splitlines()
    assert [json.loads(line)["request"] for line in raw] == [0, 1]


def test_generation_spec_paths_resolve_against_the_command_directory(tmp_path, monkeypatch):
    from harness.tasks.generate import load_generation_spec

    (tmp_path / "gen.yaml").write_text("subtask: ec_spa_gen\ntask_type: multiple-choice\ndomain: concept\n"
                                       "seed_path: seeds/spa.json\nn_rows: 4\nout_path: ../out/gen.jsonl\n")
    monkeypatch.chdir(tmp_path)
    spec = load_generation_spec("gen.yaml")
    assert spec.seed_path == str(tmp_path / "seeds" / "spa.json")
    assert spec.out_path == str(tmp_path.parent / "out" / "gen.jsonl")
