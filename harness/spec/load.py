"""Loading a sweep: YAML + `--set` overrides -> a validated SweepSpec, every problem reported at once.

    spec = load_sweep("sweeps/smoke.yaml", overrides=["train.steps=50", "grid.seed=[0]"])

Validation collects every problem with its field path (`grid.lora_rank[1]: must be >= 1`) into one
InputError, so a researcher fixes a sweep file in one pass: pydantic's errors, one line each, then
the semantic checks (harness.spec.validate). YAML is read strictly (duplicate keys, tags and alias
bombs refused, dates kept as text), and local paths are made absolute once, before anything
launches. `harness data generate` reads its spec with the same reader and overrides.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import InputError, did_you_mean
from harness.spec.schema import BUILTIN_EVAL_NAMES, SYNTHETIC_SOURCE, SweepSpec
from harness.spec.validate import semantic_problems


# ---------------------------------------------------------------------------------------------
# Loading: YAML + overrides -> SweepSpec, with every problem reported at once


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=50' -> (['train', 'steps'], 50); the value is parsed as YAML."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.steps=50")
    key, _, raw = text.partition("=")
    path = key.strip().split(".")
    if not all(part.strip() for part in path):
        raise InputError(f"--set {text!r}: empty key or key part; write KEY.PATH=VALUE, e.g. --set train.steps=50")
    if not raw.strip():
        return path, None
    try:
        return path, load_yaml_text(raw)
    except YamlProblem as exc:
        raise InputError(f"--set {text!r}: the value is not plain YAML ({exc}); close its brackets or quotes, "
                         "or quote the whole value as text, e.g. --set 'name=\"my:sweep\"'") from None


# A command-line choice of one compute budget replaces the file's other one: `--set train.steps=40` on a
# sweep that declares epochs runs 40 steps (and the reverse), instead of refusing both as set.
_OTHER_BUDGET = {("train", "steps"): "epochs", ("train", "epochs"): "steps"}


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    chosen = set()
    for text in overrides:
        path, value = parse_override(text)
        if tuple(path) in _OTHER_BUDGET and value is not None:
            chosen.add(tuple(path))
            other = _OTHER_BUDGET[tuple(path)]
            train = raw.get("train")
            if isinstance(train, dict) and ("train", other) not in chosen:
                train[other] = None
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise InputError(f"--set {text!r}: {part!r} is not a mapping, cannot set a key in it")
            node = child
        node[path[-1]] = value
    return raw


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith(("literal[", "list[", "function-")) or
                                        part in ("DomainAxis", "SourceSpec", "EvalSetRef", "str", "float", "int")):
            continue  # pydantic's union-branch tags add noise, not location
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


# Keys that earlier versions accepted elsewhere: say where they went instead of "unknown key".
MOVED_KEYS = {"train.lora_alpha": "capacity.alpha", "train.lora_dropout": "capacity.dropout",
              "train.target_modules": "capacity.target_modules"}


def _pydantic_problems(exc: ValidationError) -> list[str]:
    seen, problems = set(), []
    for err in exc.errors():
        if err["type"] == "literal_error" and isinstance(err.get("input"), dict):
            continue  # a mapping was given, so the union's string branch is not what was meant
        loc, msg = _format_loc(err["loc"]), err["msg"].removeprefix("Value error, ")
        if err["type"] == "bool_not_number":  # raised by the block, about one of its fields
            field = err["ctx"]["field"]
            loc = field if loc == "(top level)" else f"{loc}.{field}"
            msg = msg.split(": ", 1)[1]
        if err["type"] == "extra_forbidden":
            moved = MOVED_KEYS.get(".".join(str(p) for p in err["loc"]))
            msg = f"moved to {moved} (capacity settings live in the capacity block)" if moved else \
                "unknown key" + _suggest_key(err["loc"])
        line = f"{loc}: {msg}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


def _suggest_key(loc: tuple[Any, ...]) -> str:
    """Did-you-mean for an unknown key, from the field names of the block it sits in."""
    block: Any = SweepSpec
    for part in loc[:-1]:
        fields = getattr(block, "model_fields", {})
        if part in fields:
            annotation = fields[part].annotation
            block = next((a for a in getattr(annotation, "__args__", (annotation,))
                          if hasattr(a, "model_fields")), annotation)
    names = list(getattr(block, "model_fields", {}))
    return did_you_mean(str(loc[-1]), names)


MAX_CONFIG_BYTES = 10 * 2**20  # a sweep or generation spec is a page of YAML, not a data file


MAX_YAML_ALIASES = 100  # alias (*name) uses per document: enough for reuse, too few for an alias bomb


CORE_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge"))


class YamlProblem(yaml.YAMLError):
    """A YAML document we refuse although PyYAML would read it (duplicate keys, tags, alias bombs)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (naming both lines), tags outside YAML's core schema and
    alias bombs, and reads unquoted dates as text (a config holds no timestamps)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                raise YamlProblem(f"more than {MAX_YAML_ALIASES} alias (*name) uses; write the values out")
        return super().compose_node(parent, index)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if node.tag not in CORE_TAGS:
            line = node.start_mark.line + 1
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlProblem(f"line {line}: YAML tag {tag!r} is not accepted (plain strings, numbers, "
                              "booleans, lists and mappings only); remove the tag, or quote the value")
        return super().construct_object(node, deep)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (list, dict)):
                raise YamlProblem(f"line {line}: a mapping key must be plain text or a number")
            if key in seen:
                raise YamlProblem(f"key {key!r} appears twice (line {seen[key]} and line {line}); the second "
                                  "would silently replace the first: merge them into one")
            seen[key] = line
        return super().construct_mapping(node, deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_yaml_text(text: str) -> Any:
    """One YAML document, strictly (see _StrictLoader); YamlProblem on anything it refuses."""
    loader = None
    try:
        loader = _StrictLoader(text)  # its reader refuses control characters already
        return loader.get_single_data()
    except YamlProblem:
        raise
    except yaml.YAMLError as exc:
        raise YamlProblem(" ".join(str(exc).split())) from None
    except RecursionError:
        raise YamlProblem("nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file; every failure is an InputError naming the file and how to fix it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give the {what} itself")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: {path.stat().st_size} bytes is too large for a {what} "
                             f"(at most {MAX_CONFIG_BYTES} bytes); give the YAML file, not a data file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        raise InputError(f"{path}: the {what} is not UTF-8 text (it looks like UTF-16 or a binary file); "
                         "save it as UTF-8 text")
    try:
        return data.decode("utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "save it as UTF-8 text") from None


def read_yaml_mapping(path: str | Path, what: str, example_keys: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; every failure is an InputError naming the file."""
    text = read_text_file(path, what)
    try:
        raw = load_yaml_text(text)
    except YamlProblem as exc:
        raise InputError(f"{path}: not valid YAML for a {what}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a {what} must be a YAML mapping ({example_keys})")
    return raw


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read, override, validate. Raises one InputError listing every problem with its field path."""
    raw = apply_overrides(read_yaml_mapping(path, "sweep file", "name:, grid:, ..."), overrides or [])
    return validate_sweep(raw, source=str(path))


def validate_sweep(raw: dict[str, Any], source: str = "<sweep>") -> SweepSpec:
    """A validated sweep with every local path made absolute against the current directory."""
    try:
        spec = absolute_paths(SweepSpec.model_validate(raw))
    except ValidationError as exc:
        raise _problems_error(source, _pydantic_problems(exc)) from None
    problems = semantic_problems(spec)
    if problems:
        raise _problems_error(source, problems)
    return spec


# ---------------------------------------------------------------------------------------------
# Paths: relative to the directory the command runs in, made absolute once, before anything launches
# (Ray runs trials in other working directories, and on other machines)


def absolute_path(path: str, base: Path | None = None) -> str:
    """`path` against `base` (default: the current directory), `~` expanded, `..` folded; an
    absolute path keeps its form. Symlinks are kept, so the path reads as the user wrote it."""
    return os.path.normpath(os.path.join(base or Path.cwd(), os.path.expanduser(path)))


def _maybe_local(name: str) -> bool:
    """Whether a model or dataset name is a local path rather than a hub id ('org/name'): it
    exists here, or it is written as one (./, ../, /, ~)."""
    return name.startswith((".", "/", "~")) or Path(name).exists()


def absolute_paths(spec: SweepSpec, base: Path | None = None) -> SweepSpec:
    """The spec with every local path absolute: data sources (an hf source only when it is a local
    path, not a hub id), evaluation sets, a local base model and output_dir. Idempotent."""
    def source(src: Any) -> Any:
        if src == SYNTHETIC_SOURCE or (src.kind == "hf" and not _maybe_local(src.path)):
            return src
        return src.model_copy(update={"path": absolute_path(src.path, base)})

    def eval_set(ref: Any) -> Any:
        return ref if ref in BUILTIN_EVAL_NAMES else ref.model_copy(update={"path": absolute_path(ref.path, base)})

    model = spec.base_model
    if not model.startswith("builtin:") and _maybe_local(model):
        model = absolute_path(model, base)
    return spec.model_copy(update={
        "base_model": model, "output_dir": absolute_path(spec.output_dir, base),
        "data": spec.data.model_copy(update={"sources": [source(s) for s in spec.data.sources]}),
        "eval": spec.eval.model_copy(update={"sets": [eval_set(r) for r in spec.eval.sets]}),
    })


def local_paths(spec: SweepSpec) -> dict[str, str]:
    """field path -> local file or directory every trial reads (what a cluster's nodes must see)."""
    out = {f"data.sources[{i}].path": s.path for i, s in enumerate(spec.data.sources)
           if s != SYNTHETIC_SOURCE and (s.kind != "hf" or os.path.isabs(s.path))}
    out.update({f"eval.sets[{i}].path": r.path for i, r in enumerate(spec.eval.sets) if r not in BUILTIN_EVAL_NAMES})
    if os.path.isabs(spec.base_model):
        out["base_model"] = spec.base_model
    return out


def _problems_error(source: str, problems: list[str]) -> InputError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return InputError(f"{source}: {len(problems)} problem(s) in the sweep spec:\n{lines}\n"
                      "Fix these fields and run again; nothing was launched.")
