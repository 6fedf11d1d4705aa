"""The harness's module import graph has no cycle, counting imports inside functions too.

Every module under harness/ is parsed (not imported); each `import` or `from ... import` naming a
harness module is an edge, wherever it sits. Importing `a.b.c` also runs the package `a.b`'s
__init__, so that is an edge too, except from inside the package (its __init__ is already running).
A cycle here is one a function-local import merely hides until the day it is called first.

The stages (harness.spec, harness.data, harness.training, ...) are also layered, one way: LAYERS
lists them top to bottom and no import may go up (justified exceptions are listed, with why).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


def module_files() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_names(tree: ast.AST, package: str) -> list[str]:
    """Dotted names of everything the module imports, anywhere in it (relative imports resolved)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names += [f"{base}.{a.name}" for a in node.names] + [base]
    return names


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for imported in imported_names(ast.parse(path.read_text()), package):
            parts = imported.split(".")
            for k in range(1, len(parts) + 1):  # the module and every package above it
                target = ".".join(parts[:k])
                if target in files and target != name and not (name + ".").startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of module names, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_harness_import_graph_is_acyclic():
    graph = import_graph()
    assert len(graph) > 40 and graph["harness.spec.schema"], "the parser found too little: check module_files"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_function_local_import_cycle_is_found(tmp_path):
    """The checker itself: a cycle hidden in a function is caught, the package rule holds."""
    graph = {"harness.a": {"harness.b"}, "harness.b": set()}
    tree = ast.parse("def f():\n    from harness.a import x\n")
    graph["harness.b"] = {n for n in imported_names(tree, "harness") if n in graph}
    assert find_cycle(graph) == ["harness.a", "harness.b", "harness.a"]
    assert find_cycle({"harness.a": {"harness.b"}, "harness.b": set()}) is None


def test_config_no_longer_imports_capacity_from_inside_functions():
    """The old hidden cycle: the spec <-> capacity.settings. Capacity sits below the spec now."""
    graph = import_graph()
    capacity = {m for m in graph if m.startswith("harness.capacity")}
    assert not any(t.startswith("harness.spec") for m in capacity for t in graph[m])
    assert "harness.capacity.settings" in graph["harness.spec.expand"]


# The stages of the harness, top to bottom: a module may import its own stage and any stage below
# its own, never one above it nor a peer on its row. Derived from what the code imports.
LAYERS = [
    ("cli",),  # the `harness` command
    ("sweep",),  # the Ray Tune driver, preflight
    ("trial",),  # one trial, no Ray
    ("training", "evaluate"),  # fine-tuning; ShopBench scoring and inference
    ("data",),  # mixtures, evaluation sets, prompts, embeddings
    ("spec",),  # the sweep spec, expansion, estimates (torch-free)
    ("capacity",),  # adapter families
    ("shapes",),  # model shapes without weights
    ("model",),  # base models (builtin:tiny is trained on the synthetic world's text)
    ("tasks",),  # domains, subtasks, the synthetic world, readers
    ("tracking",),  # W&B runs
    ("results",),  # the record schema
    ("errors", "strict_model"),
]
# The analysis reads records only (and imports without torch or ray); only the command runs it.
SIDE_STAGES = {"analysis": {"results", "errors", "tracking"}}
# (module, stage it imports from above its own): why.
UPWARD_EXCEPTIONS = {
    ("harness.tasks.generate", "spec"):
        "`harness data generate` reads its YAML spec with the sweep files' strict reader, --set "
        "overrides and path rules (harness.spec.load), one reader for every YAML a user writes; "
        "only the command runs it, and a home below tasks would be a ninth top-level module",
}


def stage_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against LAYERS and SIDE_STAGES (between stages; within one, anything)."""
    rank = {stage: i for i, row in enumerate(LAYERS) for stage in row}
    bad = []
    for module, targets in graph.items():
        here = stage_of(module)
        for target in sorted(targets):
            there = stage_of(target)
            if here == there or (module, there) in UPWARD_EXCEPTIONS:
                continue
            if here in SIDE_STAGES:
                ok = there in SIDE_STAGES[here]
            elif there in SIDE_STAGES:
                ok = here == "cli"
            else:
                ok = rank[here] < rank[there]
            if not ok:
                bad.append(f"{module} -> {target}")
    return bad


def test_every_stage_is_placed_in_the_layers():
    placed = {stage for row in LAYERS for stage in row} | set(SIDE_STAGES)
    stages = {stage_of(m) for m in import_graph()} - {""}
    assert stages == placed, f"unplaced: {stages - placed}, gone: {placed - stages}"


def test_no_import_goes_up_the_layers():
    bad = upward_imports(import_graph())
    assert not bad, ("imports against the layers (move the code down, or justify it in UPWARD_EXCEPTIONS):\n  "
                     + "\n  ".join(bad))


def test_every_listed_exception_is_still_needed():
    graph = import_graph()
    used = {(m, stage_of(t)) for m, targets in graph.items() for t in targets}
    assert set(UPWARD_EXCEPTIONS) <= used, set(UPWARD_EXCEPTIONS) - used


def test_the_layer_check_finds_an_upward_import_and_a_peer_import():
    graph = {"harness.data.mixture": {"harness.evaluate.metrics"},
             "harness.training.loop": {"harness.evaluate"},
             "harness.analysis.load": {"harness.results", "harness.spec.schema"},
             "harness.sweep.driver": {"harness.trial.run"}}
    assert upward_imports(graph) == ["harness.data.mixture -> harness.evaluate.metrics",
                                     "harness.training.loop -> harness.evaluate",
                                     "harness.analysis.load -> harness.spec.schema"]
