"""The LLM client of `harness data generate` against misbehaving servers (issue 16): a total deadline
per request, a response size cap, non-string content and unparseable bodies as counted rejects that
keep the raw body, and a warning when an API key would cross plain http to another machine.

Each server is a real HTTP server on 127.0.0.1 whose handler misbehaves on purpose.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.tasks import generate
from harness.tasks.generate import (GenerationSpec, OpenAIBackend, UnusableResponse, resolve_endpoint,
                                    run_generation)
from harness.tasks.prompts import format_mc_prompt

Respond = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """`respond(handler)` answers every POST; the server lives for one `with` block."""

    def __init__(self, respond: Respond):
        self.respond = respond

    def __enter__(self) -> "Server":
        respond = self.respond

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    respond(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def send(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def completion(content) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


def backend(base_url: str, timeout_s: float = 10.0, retries: int = 0) -> OpenAIBackend:
    return OpenAIBackend(base_url, "m", None, temperature=0.0, max_tokens=16, timeout_s=timeout_s,
                         max_retries=retries, backoff_s=0.01)


def test_the_timeout_bounds_the_whole_request_not_each_read():
    body = completion("<input>x</input><output>0</output>")

    def drip(handler):  # one byte every 0.1 s: each read is quick, the whole body takes seconds
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.1)

    with Server(drip) as server:
        started = time.monotonic()
        with pytest.raises(HarnessError, match=r"request_timeout_s \(1 s\)"):
            backend(server.base_url, timeout_s=1.0, retries=1).complete([], n=1, seed=0)
        elapsed = time.monotonic() - started
    assert elapsed < 4.0  # two attempts of ~1 s each, not len(body) / 10 s each


def test_a_body_past_the_size_cap_is_cut_off_and_reported(monkeypatch):
    monkeypatch.setattr(generate, "MAX_RESPONSE_BYTES", 2000)
    with Server(lambda h: send(h, completion("y" * 50_000))) as server:
        (text,) = backend(server.base_url).complete([], n=1, seed=0)
    assert isinstance(text, UnusableResponse) and "over 2000 bytes" in text.reason
    assert text.startswith('{"choices"') and len(text) <= generate.RAW_BODY_KEEP


SEEDS = [{"input_field": format_mc_prompt(f"Which item is number {i}?", ["pen", "cup", "hat"]),
          "output_field": 0, "task_type": "multiple-choice", "metric": "accuracy"} for i in range(3)]


def generate_against(tmp_path: Path, base_url: str) -> tuple[dict, list[dict]]:
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps(SEEDS))
    out = tmp_path / "gen.jsonl"
    spec = GenerationSpec(subtask="gen_mc", task_type="multiple-choice", domain="concept", seed_path=str(seeds),
                          n_rows=2, style="delimited", backend="openai", model="m", base_url=base_url,
                          max_retries=0, backoff_s=0.01, request_timeout_s=10, out_path=str(out), seed=0,
                          max_requests=2, concurrency=1)
    report = run_generation(spec)
    rejects = [json.loads(line) for line in out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()]
    return report.to_dict(), rejects


UNUSABLE = {
    "content_is_a_number": (completion(42), "message.content is a int", '"content": 42'),
    "content_is_a_list": (completion([{"type": "text", "text": "hi"}]), "message.content is a list", '"type"'),
    "content_is_a_mapping": (completion({"text": "hi"}), "message.content is a dict", '"text": "hi"'),
    "body_not_json": (b"<html>502 Bad Gateway</html>", "not a chat completion", "<html>502"),
    "no_choices_key": (b'{"error": "overloaded"}', "not a chat completion", "overloaded"),
    "empty_choices": (b'{"choices": []}', "no choices", '"choices": []'),
    "deep_json": (b"[" * 100_000 + b"]" * 100_000, "not a chat completion", "[[[["),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_unusable_responses_are_counted_rejects_that_keep_the_raw_body(tmp_path, case):
    body, reason, raw_part = UNUSABLE[case]
    with Server(lambda h: send(h, body)) as server:
        report, rejects = generate_against(tmp_path, server.base_url)
    assert report["rejected_by_reason"]["unparseable"] == 2 and report["accepted"] == 0
    assert len(rejects) == 2 and all(r["reason"] == "unparseable" for r in rejects)
    assert reason in rejects[0]["detail"] and raw_part in rejects[0]["raw_body"]


@pytest.mark.parametrize("url, warned", [
    ("http://10.1.2.3:8000/v1", True), ("http://llm.example.com/v1", True), ("http://[2001:db8::1]/v1", True),
    ("http://127.0.0.1:8000/v1", False), ("http://localhost:8000/v1", False), ("http://[::1]:8000/v1", False),
    ("https://api.example.com/v1", False),
])
def test_a_key_over_plain_http_to_another_machine_is_warned_about(caplog, tmp_path, url, warned):
    spec = GenerationSpec(subtask="gen_mc", task_type="multiple-choice", domain="concept",
                          seed_path=str(tmp_path / "seeds.json"), n_rows=1, backend="openai", model="m",
                          base_url=url, api_key="sk-secret-16", out_path=str(tmp_path / "o.jsonl"))
    with caplog.at_level(logging.WARNING):
        resolve_endpoint(spec)
    assert ("travel unencrypted" in caplog.text) is warned
    assert "sk-secret-16" not in caplog.text
