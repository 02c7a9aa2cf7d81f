"""The package's layout: its parts import one another in one direction only (no circle between the
stage packages, the shared modules and the layers on top), and the module paths from before the
stage packages still resolve."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "t0_pipeline"


def part_of(module: str) -> str | None:
    """The part a dotted module belongs to: its sub-package or top-level module of t0_pipeline."""
    parts = module.split(".")
    return parts[1] if parts[0] == "t0_pipeline" and len(parts) > 1 else None


def import_graph() -> dict[str, set[str]]:
    """part → the other parts it imports, at module level or inside functions alike."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        me = part_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if me in (None, "former_paths"):  # the shims import what moved; nothing imports them
            continue
        graph.setdefault(me, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = (
                    [f"t0_pipeline.{a.name}" for a in node.names]
                    if node.module == "t0_pipeline"
                    else [node.module]
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[me] |= {p for p in map(part_of, names) if p and p != me}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one part (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_parts_import_one_another_in_one_direction_only():
    graph = import_graph()
    stages = [
        "corpus",
        "retrieval",
        "llm",
        "servers",
        "task",
        "synthetic",
        "training",
        "evaluation",
    ]
    assert set(stages) <= set(graph), "a stage package is missing"
    assert circles(graph) == []
    # the layers on top are imported by no stage
    for stage in stages:
        assert not graph[stage] & {"cli", "defs", "definitions", "serve"}, stage
    # the order of the method: a later stage may use an earlier one, never the reverse
    for earlier, later in [
        ("corpus", "retrieval"),
        ("retrieval", "synthetic"),
        ("synthetic", "training"),
        ("training", "evaluation"),
    ]:
        assert later not in graph[earlier], f"{earlier} imports {later}"


def test_the_check_finds_a_circle_when_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_every_moved_module_is_where_the_code_versions_say():
    """Each module named by its former name in the code versions' table exists at its new path,
    and no module is left at a former path but the shims."""
    from t0_pipeline.defs.versions import DEPENDS_ON, MOVED, code_version

    for former, path in MOVED.items():
        assert (PACKAGE / f"{path}.py").is_file(), (former, path)
        assert not (PACKAGE / f"{former}.py").exists(), former
    for asset in DEPENDS_ON:
        assert len(code_version(asset)) == 12


def test_a_move_leaves_the_code_fingerprint_as_it_was():
    """A module whose imports name moved modules by their new paths (and in the order the import
    sorter gives the new names) hashes as it did when they had their flat names; any other change
    to it still changes the hash."""
    from t0_pipeline.defs.versions import code_fingerprint

    before = b"""
from t0_pipeline import triage_prompt
from t0_pipeline.artifacts import T0Error
from t0_pipeline.fetch import HttpFetcher
from t0_pipeline.llm import LLMClient
from t0_pipeline.triage_scoring import score


def f():
    from t0_pipeline.train_plan import size_plan

    return size_plan
"""
    after = b"""
from t0_pipeline.artifacts import T0Error
from t0_pipeline.corpus.fetch import HttpFetcher
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.task import prompt as triage_prompt
from t0_pipeline.task.scoring import score


def f():
    from t0_pipeline.training.plan import size_plan

    return size_plan
"""
    assert code_fingerprint(after) == code_fingerprint(before)
    assert code_fingerprint(after.replace(b"return size_plan", b"return None")) != (
        code_fingerprint(before)
    )
    assert code_fingerprint(after.replace(b"import score", b"import scale")) != (
        code_fingerprint(before)
    )
