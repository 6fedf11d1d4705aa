"""LLM generation of training rows for one subtask, from seed examples, resumable.

    spec = GenerationSpec(subtask="ec_spa_gen", task_type="multiple-choice", domain="concept",
                          seed_path="seeds/spa.json", n_rows=500, style="delimited", backend="openai",
                          model="Qwen2.5-7B-Instruct", base_url="http://localhost:8000/v1",
                          out_path="data/generated/ec_spa_gen.jsonl")
    report = run_generation(spec)      # GenerationReport: accepted, rejected_by_reason, requests_made, path
    print(report.summary())

    generate_main("gen.yaml", ["n_rows=800"])   # what `harness data generate gen.yaml --set n_rows=800` runs

Request index i shows `seeds_per_prompt` seed rows drawn with random.Random(f"{seed}:{i}") and asks for
`examples_per_request` new rows in the chosen prompt style (see harness.tasks.prompts). Each candidate
is parsed, checked against the task type (`parse_output`, then `schema.row_problems`), and compared
with the seeds and every row accepted so far (same normalised input = duplicate; character 5-gram
Jaccard >= near_dup_threshold = near-duplicate). Rejects are counted by reason (REJECT_REASONS).

Files, all next to out_path:
    out_path                  accepted ShopBench rows, one JSON object a line (appended as they come)
    <out_path>.state.json     request indices done + cumulative counts; a rerun with the same out_path
                              asks only for what is still missing, and none at all once n_rows are there
    <out_path>.raw.jsonl      every completion as returned (reparse later without paying again)
    <out_path>.rejects.jsonl  every rejected candidate with its reason

The OpenAI-compatible backend POSTs {base_url}/chat/completions; base URL, model and key come from the
spec or HARNESS_LLM_BASE_URL / HARNESS_LLM_MODEL / HARNESS_LLM_API_KEY (then OPENAI_API_KEY). Requests
run on a thread pool of `concurrency` workers and are retried with exponential backoff on 429, 5xx and
connection errors, `max_retries` times. `request_timeout_s` bounds each attempt as a whole (not each
read), and a body past MAX_RESPONSE_BYTES is cut off there. A response that holds no usable text (not
JSON, no choices, a non-string `content`, an oversized body) is a counted `unparseable` reject whose
raw body (cut to RAW_BODY_KEEP characters) is kept in the rejects file. The key travels only in the
Authorization header: it is never logged, written to any of the files above, or shown in an error
message; a base_url with plain http to a host that is not loopback draws a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from harness.errors import HarnessError, InputError, MissingDependencyError, did_you_mean, unknown_name_message
from harness.strict_model import StrictModel
from harness.tasks import prompts
from harness.tasks.schema import METRIC_NAMES, TASK_TYPES, row_problems
from harness.tasks.sources import check_domain, check_subtask_name, track_of

log = logging.getLogger(__name__)

REJECT_REASONS = ("unparseable", "missing_fields", "wrong_output_type", "invalid_row", "duplicate",
                  "near_duplicate")
STATE_VERSION = 1
RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))  # worth asking again
MAX_BACKOFF_S = 60.0  # cap on one wait between attempts, Retry-After included
MAX_RESPONSE_BYTES = 16 * 2**20  # one chat completion is kilobytes; past this the body is cut off, not held
RAW_BODY_KEEP = 4000  # characters of an unusable response body kept in the rejects file
READ_CHUNK = 65536  # bytes asked of the socket per read (a read returns what has arrived)
ENV_BASE_URL, ENV_MODEL = "HARNESS_LLM_BASE_URL", "HARNESS_LLM_MODEL"
ENV_KEYS = ("HARNESS_LLM_API_KEY", "OPENAI_API_KEY")  # first one set wins

# Spec fields that change what a request index produces: a resumed run must agree on all of them.
IDENTITY_FIELDS = ("subtask", "task_type", "metric", "domain", "style", "backend", "model", "temperature",
                   "max_tokens", "seed", "examples_per_request", "completions_per_request",
                   "seeds_per_prompt", "near_dup_threshold", "description")


class GenerationError(HarnessError):
    """The endpoint kept failing; rows generated so far are kept, and a rerun resumes."""


class GenerationSpec(StrictModel):
    """What to generate, how to ask for it, and where to put it."""

    # StrictModel: unknown keys, booleans for numbers and nan / inf are refused

    subtask: str  # name of the generated subtask (rows get it as subtask and task_name)
    task_type: str  # one of schema.TASK_TYPES
    metric: str | None = None  # default: the task type's first metric
    domain: str  # concept, reasoning, behavior or multilingual
    seed_path: str  # ShopBench JSON / JSON-lines file with seed rows of this task type
    n_rows: int = Field(ge=1)  # accepted rows wanted in out_path (across resumed runs)
    style: Literal["plain", "delimited"] = "delimited"  # prompt style (prompts.py)
    backend: Literal["openai", "transformers"] = "openai"
    model: str | None = None  # openai: model name (or $HARNESS_LLM_MODEL); transformers: local dir / hub id
    base_url: str | None = None  # openai: e.g. http://localhost:8000/v1 (or $HARNESS_LLM_BASE_URL)
    api_key: SecretStr | None = None  # else $HARNESS_LLM_API_KEY, then $OPENAI_API_KEY; never stored
    temperature: float = Field(default=0.9, ge=0, le=2)  # sampling temperature; >0 for variety
    max_tokens: int = Field(default=1024, ge=16)  # completion budget per request, in tokens
    concurrency: int = Field(default=4, ge=1, le=64)  # requests in flight at once
    max_retries: int = Field(default=4, ge=0, le=10)  # extra attempts on 429 / 5xx / connection errors
    backoff_s: float = Field(default=1.0, ge=0, le=MAX_BACKOFF_S)  # first wait; doubles per attempt
    request_timeout_s: float = Field(default=120.0, gt=0)  # seconds to wait for one response
    out_path: str  # accepted rows (JSON lines); state and logs sit beside it
    seed: int = 0  # seeds the choice of seed examples per request, and the request's sampling seed
    examples_per_request: int = Field(default=5, ge=1, le=50)  # rows asked for in one completion
    completions_per_request: int = Field(default=1, ge=1, le=16)  # the API's `n`; 1 = one completion per request
    seeds_per_prompt: int = Field(default=3, ge=1, le=20)  # seed rows shown in each prompt
    max_requests: int | None = Field(default=None, ge=1)  # request indices allowed in all (default: 4x the need + 8)
    near_dup_threshold: float = Field(default=0.9, gt=0, le=1)  # character 5-gram Jaccard of inputs
    description: str = ""  # optional one-line description of the subtask for the prompt

    @field_validator("task_type")
    @classmethod
    def _known_task_type(cls, value: str) -> str:
        if value not in TASK_TYPES:
            raise ValueError(unknown_name_message("task_type", value, TASK_TYPES))
        return value

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        return check_domain(value)

    @field_validator("subtask")
    @classmethod
    def _subtask_name(cls, value: str) -> str:
        return check_subtask_name(value)

    @model_validator(mode="after")
    def _metric_fits(self) -> "GenerationSpec":
        if self.metric is not None and self.metric not in TASK_TYPES[self.task_type]:
            known = f"; known metrics: {', '.join(sorted(METRIC_NAMES))}" if self.metric not in METRIC_NAMES else ""
            raise ValueError(f"metric: {self.metric!r} does not apply to task_type {self.task_type!r} "
                             f"(use one of {', '.join(TASK_TYPES[self.task_type])}){known}")
        return self

    @property
    def resolved_metric(self) -> str:
        return self.metric or TASK_TYPES[self.task_type][0]

    @property
    def rows_per_request(self) -> int:
        return self.examples_per_request * self.completions_per_request

    @classmethod
    def parse(cls, raw: Any, where: str = "generate") -> "GenerationSpec":
        """Validate a mapping; one InputError lists every problem as `where.field: message`."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = "unknown key" + did_you_mean(str(err["loc"][-1]), cls.model_fields)
                problems.append(f"{where}.{loc}: {msg}" if loc else f"{where}.{msg}")
            raise InputError(f"{len(problems)} problem(s) in {where}:\n" +
                             "\n".join(f"  - {p}" for p in problems)) from None


@dataclass
class GenerationReport:
    """Acceptance statistics for one out_path. Counts are cumulative over resumed runs unless noted."""

    path: Path
    target: int  # n_rows asked for
    accepted: int  # rows in out_path now
    rejected_by_reason: dict[str, int]
    candidates: int  # examples parsed or attempted from completions
    surplus: int  # candidates left unread because the target was already reached
    requests_total: int  # request indices completed, all runs
    requests_made: int  # requests completed in this run (0 when resuming a finished file)
    http_attempts: int  # HTTP POSTs (or local generate calls) in this run, retries included
    retries: int  # attempts in this run that repeated a failed one
    style: str = ""
    backend: str = ""

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def acceptance_rate(self) -> float:
        screened = self.candidates - self.surplus
        return self.accepted / screened if screened else 0.0

    @property
    def complete(self) -> bool:
        return self.accepted >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "target": self.target, "accepted": self.accepted,
                "rejected_by_reason": dict(self.rejected_by_reason), "candidates": self.candidates,
                "surplus": self.surplus, "acceptance_rate": round(self.acceptance_rate, 4),
                "requests_total": self.requests_total, "requests_made": self.requests_made,
                "http_attempts": self.http_attempts, "retries": self.retries, "style": self.style,
                "backend": self.backend}

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.rejected_by_reason.items() if v) or "none"
        return (f"{self.path}: {self.accepted}/{self.target} rows accepted "
                f"({self.acceptance_rate:.0%} of {self.candidates - self.surplus} screened; style {self.style}); "
                f"rejected: {reasons}; requests this run {self.requests_made} "
                f"({self.http_attempts} attempts, {self.retries} retries), all runs {self.requests_total}")


# ---------------------------------------------------------------------------------------------
# Near-duplicate index: exact normalised text, then 5-gram Jaccard with prefix filtering


def normalise(text: str) -> str:
    """Lowercase, punctuation dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def char_ngrams(text: str, n: int = 5) -> frozenset[str]:
    return frozenset(text[i:i + n] for i in range(len(text) - n + 1)) if len(text) >= n else frozenset({text})


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDupIndex:
    """Finds texts whose normalised form equals, or whose 5-gram Jaccard reaches `threshold`, an indexed one.

    Prefix filtering (grams in one fixed global order): two sets with Jaccard >= t share a gram among
    the first |A| - ceil(t*|A|) + 1 of each, so only texts sharing a prefix gram are compared exactly.
    """

    def __init__(self, threshold: float = 0.9, n: int = 5):
        self.threshold, self.n = threshold, n
        self._exact: set[str] = set()
        self._sets: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def _prefix(self, grams: frozenset[str]) -> list[str]:
        ordered = sorted(grams, key=lambda g: (zlib.crc32(g.encode()), g))
        keep = len(ordered) - math.ceil(self.threshold * len(ordered) - 1e-9) + 1
        return ordered[:keep]

    def check(self, text: str) -> str | None:
        """'duplicate', 'near_duplicate' or None."""
        norm = normalise(text)
        if norm in self._exact:
            return "duplicate"
        grams = char_ngrams(norm, self.n)
        candidates = {i for g in self._prefix(grams) for i in self._postings.get(g, ())}
        if any(jaccard(grams, self._sets[i]) >= self.threshold for i in candidates):
            return "near_duplicate"
        return None

    def add(self, text: str) -> None:
        norm = normalise(text)
        self._exact.add(norm)
        grams = char_ngrams(norm, self.n)
        self._sets.append(grams)
        for g in self._prefix(grams):
            self._postings.setdefault(g, []).append(len(self._sets) - 1)


# ---------------------------------------------------------------------------------------------
# Backends


class Backend(Protocol):
    attempts: int  # calls made, retries included
    retries: int

    def complete(self, messages: list[dict[str, str]], *, n: int, seed: int) -> list[str]:
        """`n` completions (fewer if the server ignores n) for one chat request."""


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class OpenAIBackend:
    """POST {base_url}/chat/completions with retries; thread-safe (one request per call)."""

    def __init__(self, base_url: str, model: str, api_key: str | None, *, temperature: float,
                 max_tokens: int, timeout_s: float, max_retries: int, backoff_s: float):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self._key = model, api_key
        self.temperature, self.max_tokens, self.timeout_s = temperature, max_tokens, timeout_s
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.attempts = self.retries = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # no key here
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r})"

    def complete(self, messages: list[dict[str, str]], *, n: int, seed: int) -> list[str]:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": seed}
        if n > 1:
            body["n"] = n
        return self._choices(*self._post(body))

    def _post(self, body: dict[str, Any]) -> tuple[Any, str]:
        """(parsed JSON or None, raw body text) of the first 200 answer, retrying what is worth it."""
        import requests

        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.attempts += 1
                self.retries += attempt > 0
            wait = self.backoff_s * 2 ** attempt
            try:
                status, raw, retry_after = self._send(body, headers)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                last = f"{type(exc).__name__}: {redact(str(exc), self._key)}"
            else:
                if status == 200:
                    return _json_or_none(raw), raw
                last = f"HTTP {status}: {redact(raw[:300], self._key)}"
                if status not in RETRY_STATUS:
                    raise _fatal_http(status, self.url, last)
                wait = _retry_after(retry_after, wait)
            if attempt < self.max_retries:
                log.warning("request seed=%s: %s; retrying in %.2fs (attempt %d of %d)", body["seed"], last,
                            min(wait, MAX_BACKOFF_S), attempt + 2, self.max_retries + 1)
                time.sleep(min(wait, MAX_BACKOFF_S))
        raise GenerationError(f"{self.url}: gave up after {self.max_retries + 1} attempts ({last}); rows "
                              "accepted so far are kept: run the same command again to resume")

    def _send(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str, str | None]:
        """One POST: (status, body text, Retry-After). request_timeout_s bounds the whole exchange, not
        each read (a server dripping a byte a second cannot hold it longer), and a body past
        MAX_RESPONSE_BYTES is cut off there rather than held in memory whole."""
        import requests

        deadline = time.monotonic() + self.timeout_s
        with requests.post(self.url, json=body, headers=headers, timeout=(10, self.timeout_s),
                           stream=True) as resp:
            chunks, size = [], 0
            while size <= MAX_RESPONSE_BYTES:
                if time.monotonic() > deadline:
                    raise requests.Timeout(f"no complete response within request_timeout_s "
                                           f"({self.timeout_s:g} s)")
                chunk = _read_some(resp.raw)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            text = b"".join(chunks).decode("utf-8", errors="replace")
            if size > MAX_RESPONSE_BYTES:
                text = TOO_LARGE + text[:RAW_BODY_KEEP]
            return resp.status_code, text, resp.headers.get("Retry-After")

    @staticmethod
    def _choices(payload: Any, raw: str = "") -> list[str]:
        """Completion texts; a malformed payload or a non-string content is an UnusableResponse
        (a counted reject that keeps the raw body), never a traceback."""
        if raw.startswith(TOO_LARGE):
            return [UnusableResponse(raw[len(TOO_LARGE):], f"response body over {MAX_RESPONSE_BYTES} bytes; "
                                     "cut off there (lower max_tokens, or check the server)")]
        try:
            contents = [c["message"]["content"] for c in payload["choices"]]
        except (KeyError, TypeError, IndexError):
            return [UnusableResponse(raw, "not a chat completion (no choices[].message.content)")]
        if not contents:
            return [UnusableResponse(raw, "the completion has no choices")]
        return [c if isinstance(c, str) else "" if c is None else
                UnusableResponse(raw, f"message.content is a {type(c).__name__}, not a string")
                for c in contents]


def _read_some(raw: Any) -> bytes:
    """What has arrived (at most READ_CHUNK bytes, one socket read), urllib3's errors as requests'."""
    import requests
    import urllib3

    try:
        return raw.read1(READ_CHUNK, decode_content=True)
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.Timeout(str(exc)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None


TOO_LARGE = "\x00too-large\x00"  # marks a cut-off body between _send and _choices


class UnusableResponse(str):
    """A completion that cannot be screened (malformed payload, non-string content, oversized body):
    the text is the raw body (cut to RAW_BODY_KEEP), `reason` says what was wrong."""

    reason: str

    def __new__(cls, raw: str, reason: str) -> "UnusableResponse":
        obj = super().__new__(cls, raw[:RAW_BODY_KEEP])
        obj.reason = reason
        return obj


def _json_or_none(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _retry_after(header: str | None, default: float) -> float:
    try:
        return max(0.0, float(header)) if header else default
    except ValueError:
        return default


def _fatal_http(status: int, url: str, detail: str) -> HarnessError:
    if status in (401, 403):
        return InputError(f"{url}: {detail}; check the API key (HARNESS_LLM_API_KEY or OPENAI_API_KEY)")
    if status == 404:
        return InputError(f"{url}: {detail}; check base_url (it should end in /v1 for most servers) and model")
    return InputError(f"{url}: {detail}")


class TransformersBackend:
    """Sampling from a local causal LM with `generate`; one call at a time (a lock guards the model)."""

    def __init__(self, model: str, *, temperature: float, max_tokens: int):
        try:
            import torch  # noqa: F401
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("backend transformers needs torch and transformers: "
                                         "pip install torch transformers") from exc
        local = Path(model).exists()
        self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local)
        self.model = AutoModelForCausalLM.from_pretrained(model, local_files_only=local).eval()
        self.temperature, self.max_tokens = temperature, max_tokens
        self.attempts = self.retries = 0
        self._lock = threading.Lock()

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def complete(self, messages: list[dict[str, str]], *, n: int, seed: int) -> list[str]:
        import torch

        with self._lock:
            self.attempts += 1
            enc = self.tokenizer(self._prompt(messages), return_tensors="pt")
            torch.manual_seed(seed)
            sample = self.temperature > 0
            pad = self.tokenizer.pad_token_id
            pad = self.tokenizer.eos_token_id if pad is None else pad
            with torch.no_grad():
                out = self.model.generate(**enc, do_sample=sample, temperature=self.temperature if sample else None,
                                          max_new_tokens=self.max_tokens, num_return_sequences=n,
                                          pad_token_id=pad)
            return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def make_backend(spec: GenerationSpec) -> Backend:
    if spec.backend == "transformers":
        if not spec.model:
            raise InputError("model: backend transformers needs a model (a local directory or hub id)")
        return TransformersBackend(spec.model, temperature=spec.temperature, max_tokens=spec.max_tokens)
    base_url, model, key = resolve_endpoint(spec)
    return OpenAIBackend(base_url, model, key, temperature=spec.temperature, max_tokens=spec.max_tokens,
                         timeout_s=spec.request_timeout_s, max_retries=spec.max_retries, backoff_s=spec.backoff_s)


def resolve_endpoint(spec: GenerationSpec) -> tuple[str, str, str | None]:
    """(base_url, model, api key or None) from the spec, else the environment."""
    base_url = spec.base_url or os.environ.get(ENV_BASE_URL)
    model = spec.model or os.environ.get(ENV_MODEL)
    missing = []
    if not base_url:
        missing.append(f"base_url: not set; give it in the spec or set {ENV_BASE_URL} (e.g. http://localhost:8000/v1)")
    if not model:
        missing.append(f"model: not set; give it in the spec or set {ENV_MODEL}")
    if missing:
        raise InputError("backend openai:\n  " + "\n  ".join(missing))
    key = spec.api_key.get_secret_value() if spec.api_key else None
    key = key or next((os.environ[k] for k in ENV_KEYS if os.environ.get(k)), None)
    if key and not _key_travels_safely(str(base_url)):
        log.warning("base_url %s is plain http to a host that is not this machine: the API key would "
                    "travel unencrypted; use https, or a loopback address (an SSH tunnel)", base_url)
    return str(base_url), str(model), key


def _key_travels_safely(base_url: str) -> bool:
    """https, or plain http to a loopback host (the key never leaves this machine)."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme != "http":
        return True
    host = parts.hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Files: rows, state, logs


@dataclass
class _State:
    identity: dict[str, Any]
    completed: set[int] = field(default_factory=set)
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    candidates: int = 0
    surplus: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "identity": self.identity, "completed": sorted(self.completed),
                "rejected_by_reason": self.rejected, "candidates": self.candidates, "surplus": self.surplus}


def _paths(out: Path) -> dict[str, Path]:
    return {"state": out.with_name(out.name + ".state.json"), "raw": out.with_name(out.name + ".raw.jsonl"),
            "rejects": out.with_name(out.name + ".rejects.jsonl")}


def _identity(spec: GenerationSpec, model: str | None, seed_digest: str) -> dict[str, Any]:
    ident = {k: getattr(spec, k) for k in IDENTITY_FIELDS}
    ident.update(model=model, metric=spec.resolved_metric, seeds_sha256=seed_digest)
    return ident


def _load_state(out: Path, identity: dict[str, Any]) -> _State:
    path = _paths(out)["state"]
    if not path.exists():
        if out.exists() and out.stat().st_size:
            raise InputError(f"{out}: exists but has no {path.name}; use a new out_path, or delete the file")
        return _State(identity)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable generation state ({exc}); "
                         f"delete it and {out.name} to start over") from exc
    changed = sorted(k for k in set(identity) | set(raw.get("identity", {}))
                     if identity.get(k) != raw.get("identity", {}).get(k))
    if changed:
        raise InputError(f"{out}: was generated with different settings ({', '.join(changed)}); "
                         "use a new out_path, or delete it and its .state.json to start over")
    rejected = dict.fromkeys(REJECT_REASONS, 0) | raw.get("rejected_by_reason", {})
    return _State(identity, set(raw.get("completed", [])), rejected, raw.get("candidates", 0),
                  raw.get("surplus", 0))


def _save_state(out: Path, state: _State) -> None:
    from harness.results import atomic_write_text

    # atomic, under a unique temp name: a crash or a full disk leaves the old state or the new one
    atomic_write_text(_paths(out)["state"], json.dumps(state.to_json(), indent=1))


def _read_rows(out: Path) -> list[dict[str, Any]]:
    """Accepted rows so far; a torn last line (a crash mid-write) is dropped and the file repaired."""
    if not out.exists():
        return []
    lines = out.read_text(encoding="utf-8").split("\n")
    rows, good = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
            good.append(line)
        except ValueError:
            if number < len(lines) - 1:
                raise InputError(f"{out}:line {number}: not JSON; this file is written by `generate` "
                                 "and was changed by hand, or is not a generation output") from None
            log.warning("%s: dropping a torn last line (an interrupted run)", out)
            from harness.results import atomic_write_text

            atomic_write_text(out, "".join(g + "\n" for g in good))
    return rows


def _append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    if records:
        with path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _load_seeds(spec: GenerationSpec) -> tuple[list[dict[str, Any]], str]:
    from harness.tasks.shopbench_io import read_shopbench

    bench = read_shopbench(spec.seed_path)
    seeds = [r for r in bench.rows if r["task_type"] == spec.task_type]
    if not seeds:
        found = sorted({r["task_type"] for r in bench.rows})
        raise InputError(f"seed_path: {spec.seed_path} has no {spec.task_type} rows (it has: {', '.join(found)})")
    digest = hashlib.sha256(Path(spec.seed_path).read_bytes()).hexdigest()
    return seeds, digest


# ---------------------------------------------------------------------------------------------
# Screening one completion


@dataclass
class _Screen:
    """Turns completions into accepted rows and counted rejects, in request order (so: deterministic)."""

    spec: GenerationSpec
    state: _State
    index: NearDupIndex
    accepted: int
    model: str

    def absorb(self, request: int, texts: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows, rejects = [], []
        for choice, text in enumerate(texts):
            if isinstance(text, UnusableResponse):
                self.state.candidates += 1
                rejects.append(self._reject(request, "unparseable", text.reason, "", "", raw_body=str(text)))
                continue
            pairs, parse_rejects = prompts.parse_completion(self.spec.style, text)
            self.state.candidates += len(pairs) + len(parse_rejects)
            for rej in parse_rejects:
                rejects.append(self._reject(request, rej.reason, rej.detail, text[:500], ""))
            for k, (inp, out_text) in enumerate(pairs):
                if self.accepted >= self.spec.n_rows:
                    self.state.surplus += 1
                    continue
                row, reason, detail = self._check(inp, out_text, f"{request}.{choice}.{k}")
                if row is None:
                    rejects.append(self._reject(request, reason, detail, inp, out_text))
                else:
                    rows.append(row)
                    self.index.add(inp)
                    self.accepted += 1
        return rows, rejects

    def _check(self, inp: str, out_text: str, tag: str) -> tuple[dict[str, Any] | None, str, str]:
        value, problem = prompts.parse_output(self.spec.task_type, out_text)
        if problem:
            return None, "wrong_output_type", problem
        if self.spec.task_type == "multiple-choice":
            n_options = prompts.count_mc_options(inp)
            if n_options and value >= n_options:
                return None, "wrong_output_type", f"answer {value} but the input lists {n_options} options"
        row = {"input_field": inp, "output_field": value, "task_type": self.spec.task_type,
               "metric": self.spec.resolved_metric, "task_name": self.spec.subtask,
               "track": track_of(self.spec.domain), "domain": self.spec.domain,
               "subtask": self.spec.subtask, "row_id": f"{self.spec.subtask}:gen{tag}",
               "source": f"generated:{self.spec.backend}:{self.model}:{self.spec.style}"}
        problems = row_problems(row)
        if problems:
            return None, "invalid_row", "; ".join(problems)
        dup = self.index.check(inp)
        if dup:
            closely = " closely" if dup == "near_duplicate" else ""
            return None, dup, f"input matches a seed or an accepted row{closely}"
        return row, "", ""

    def _reject(self, request: int, reason: str, detail: str, inp: str, out: str,
                raw_body: str | None = None) -> dict[str, Any]:
        self.state.rejected[reason] = self.state.rejected.get(reason, 0) + 1
        reject = {"request": request, "reason": reason, "detail": detail, "input": inp[:2000], "output": out[:500]}
        if raw_body is not None:
            reject["raw_body"] = raw_body
        return reject


# ---------------------------------------------------------------------------------------------
# The run


def _request_messages(spec: GenerationSpec, seeds: list[dict[str, Any]], request: int) -> list[dict[str, str]]:
    rng = random.Random(f"{spec.seed}:{request}")
    shown = rng.sample(seeds, min(spec.seeds_per_prompt, len(seeds)))
    task = prompts.TaskBrief(spec.subtask, spec.task_type, spec.resolved_metric, spec.description)
    return prompts.build_messages(spec.style, task, shown, spec.examples_per_request)


def run_generation(spec: GenerationSpec, *, backend: Backend | None = None) -> GenerationReport:
    """Generate until out_path holds n_rows accepted rows (or max_requests are spent); resumable."""
    out = Path(spec.out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    seeds, seed_digest = _load_seeds(spec)
    model = spec.model if spec.backend == "transformers" else (spec.model or os.environ.get(ENV_MODEL))
    state = _load_state(out, _identity(spec, model, seed_digest))
    existing = _read_rows(out)
    state.completed |= _requests_in(existing, spec.subtask)
    index = NearDupIndex(spec.near_dup_threshold)
    for r in seeds + existing:
        index.add(r["input_field"])
    screen = _Screen(spec, state, index, len(existing), str(model))
    made = 0
    if screen.accepted < spec.n_rows:
        backend = backend or make_backend(spec)
        made = _run_batches(spec, seeds, backend, screen, out)
    else:
        backend = backend or _NoBackend()
    _save_state(out, state)
    report = GenerationReport(out, spec.n_rows, screen.accepted, dict(state.rejected), state.candidates,
                              state.surplus, len(state.completed), made, backend.attempts, backend.retries,
                              spec.style, spec.backend)
    log.info("%s", report.summary())
    return report


class _NoBackend:
    attempts = retries = 0


def _requests_in(rows: list[dict[str, Any]], subtask: str) -> set[int]:
    """Request indices that rows in out_path came from (their row_id is `<subtask>:gen<request>.<choice>.<k>`)."""
    found = set()
    for r in rows:
        m = re.fullmatch(re.escape(subtask) + r":gen(\d+)\.\d+\.\d+", str(r.get("row_id", "")))
        if m:
            found.add(int(m.group(1)))
    return found


def _run_batches(spec: GenerationSpec, seeds: list[dict[str, Any]], backend: Backend, screen: _Screen,
                 out: Path) -> int:
    """Batches of up to `concurrency` requests until the target is met; returns requests completed."""
    limit = spec.max_requests or 4 * math.ceil(spec.n_rows / spec.rows_per_request) + 8
    todo = (i for i in range(limit) if i not in screen.state.completed)
    made = 0
    with ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="generate") as pool:
        while screen.accepted < spec.n_rows:
            need = math.ceil((spec.n_rows - screen.accepted) / spec.rows_per_request)
            batch = [i for _, i in zip(range(min(need, spec.concurrency)), todo)]
            if not batch:
                log.warning("%s: max_requests (%d) spent with %d/%d rows; raise max_requests or n_rows",
                            out, limit, screen.accepted, spec.n_rows)
                break
            futures = [(i, pool.submit(backend.complete, _request_messages(spec, seeds, i),
                                       n=spec.completions_per_request, seed=spec.seed + i)) for i in batch]
            made += _absorb_batch(futures, screen, out)
    return made


def _absorb_batch(futures: list[tuple[int, Any]], screen: _Screen, out: Path) -> int:
    """Record finished requests in index order; re-raise the first failure after saving the rest."""
    files, failure, done = _paths(out), None, 0
    for i, fut in futures:
        try:
            texts = fut.result()
        except HarnessError as exc:
            failure = failure or exc
            continue
        _append_jsonl(files["raw"], [{"request": i, "choice": j, "text": t} for j, t in enumerate(texts)])
        rows, rejects = screen.absorb(i, texts)
        _append_jsonl(out, rows)
        _append_jsonl(files["rejects"], rejects)
        screen.state.completed.add(i)
        _save_state(out, screen.state)
        done += 1
    if failure is not None:
        raise failure
    return done


# ---------------------------------------------------------------------------------------------
# Command-line face


def load_generation_spec(path: str | Path, overrides: Sequence[str] = ()) -> GenerationSpec:
    """A generation YAML (top-level keys = GenerationSpec fields) with `key=value` overrides."""
    from harness.spec.load import apply_overrides, read_yaml_mapping

    raw = read_yaml_mapping(path, "generation spec", "subtask:, task_type:, ...")
    spec = GenerationSpec.parse(apply_overrides(raw, list(overrides)), where=str(path))
    return absolute_generation_paths(spec)


def absolute_generation_paths(spec: GenerationSpec) -> GenerationSpec:
    """seed_path and out_path against the directory the command runs in, as a sweep's paths are
    (harness.spec.load.absolute_path). `model` stays as written: it is part of the resume identity."""
    from harness.spec.load import absolute_path

    return spec.model_copy(update={"seed_path": absolute_path(spec.seed_path),
                                   "out_path": absolute_path(spec.out_path)})


def generate_main(spec_path: str | Path, overrides: Sequence[str] = (), *, as_json: bool = False) -> int:
    """`harness data generate SPEC [--set k=v ...] [--json]`: 0 when out_path holds n_rows rows, else 1."""
    report = run_generation(load_generation_spec(spec_path, overrides))
    print(json.dumps(report.to_dict(), indent=1) if as_json else report.summary())
    return 0 if report.complete else 1
