"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for tests.

    with StubLLM(script, failures={1: [429], 2: [500]}) as llm:
        spec = GenerationSpec(..., base_url=llm.base_url)
        ...
        assert llm.hits == 7

`script(request_index, body)` returns the completion texts for a request; the request index is read
from the body's `seed` (generate sends spec.seed + index; tests use seed 0). `failures[i]` lists HTTP
statuses to answer, one per attempt, before request i succeeds. The server runs in a daemon thread,
stops when the `with` block ends, and stops on its own after `max_lifetime_s` in any case.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Callable[[int, dict[str, Any]], list[str]]


class StubLLM:
    def __init__(self, script: Script, failures: dict[int, list[int]] | None = None,
                 error_body: str = '{"error": {"message": "try again"}}', max_lifetime_s: float = 60.0):
        self.script = script
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.error_body = error_body
        self.max_lifetime_s = max_lifetime_s
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []  # every request body, in arrival order
        self.auth: list[str | None] = []  # the Authorization header of every request
        self.statuses: list[int] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "StubLLM":
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True, name="stub-llm")
        self.thread.start()
        self.watchdog = threading.Timer(self.max_lifetime_s, self.server.shutdown)
        self.watchdog.daemon = True
        self.watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.watchdog.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def hits(self) -> int:
        return len(self.bodies)

    def requested(self) -> list[int]:
        """Request indices (body seeds) of successful answers, in arrival order."""
        with self.lock:
            return [b.get("seed") for b, s in zip(self.bodies, self.statuses) if s == 200]

    # -- one request ---------------------------------------------------------------------------

    def answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, str]:
        if not path.endswith("/chat/completions"):
            return 404, '{"error": {"message": "not found"}}'
        body = json.loads(raw)
        index = int(body.get("seed", 0))
        with self.lock:
            self.bodies.append(body)
            self.auth.append(headers.get("Authorization"))
            pending = self.failures.get(index)
            status = pending.pop(0) if pending else 200
            self.statuses.append(status)
        if status != 200:
            return status, self.error_body
        texts = self.script(index, body)
        choices = [{"index": j, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                   for j, t in enumerate(texts)]
        return 200, json.dumps({"id": f"cmpl-{index}", "object": "chat.completion", "model": body.get("model"),
                                "choices": choices})


def _handler(stub: StubLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, text = stub.answer(self.path, self.headers, raw)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
