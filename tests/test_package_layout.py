"""The package's imports follow the stages of a build: config -> plan -> fetch -> run -> package ->
outputs, then the pipeline and the CLI that join them. A module imports only its own stage, earlier
ones and the shared leaf modules; and no two modules import each other, directly or round a loop."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "trtllm_builder"
STAGES = ["config", "plan", "fetch", "run", "package", "outputs"]
LEAVES = {"errors", "secrets", "redactor", "progress", "deadline", "checksums", "sizes"}  # shared by every stage
TOP = {"pipeline", "cli", "__main__"}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["trtllm_builder", *parts])


def _imports(path: Path) -> set[str]:
    """Project modules ``path`` imports (module-level and inside functions alike)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trtllm_builder"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                out.add(
                    candidate if (PKG.parent / candidate.replace(".", "/")).with_suffix(".py").exists() else node.module
                )
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("trtllm_builder"))
    return out


def _rank(module: str) -> int:
    parts = module.split(".")
    if module == "trtllm_builder" or parts[1] in LEAVES:
        return -1
    if parts[1] in TOP:
        return len(STAGES)
    return STAGES.index(parts[1])


GRAPH = {_module(p): _imports(p) for p in PKG.rglob("*.py")}


def test_every_module_belongs_to_a_stage() -> None:
    for module in GRAPH:
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in {*STAGES, *LEAVES, *TOP}, f"{module}: not in a stage folder"


def test_imports_only_go_to_earlier_stages() -> None:
    wrong = [
        f"{mod} ({STAGES[_rank(mod)] if 0 <= _rank(mod) < len(STAGES) else 'top'}) imports {dep}"
        for mod, deps in GRAPH.items()
        for dep in deps
        if _rank(dep) > _rank(mod)
    ]
    leaves = [
        f"{mod} imports {dep}" for mod, deps in GRAPH.items() if _rank(mod) == -1 for dep in deps if _rank(dep) >= 0
    ]
    assert not wrong and not leaves, "\n".join(wrong + leaves)


def test_no_import_cycles() -> None:
    seen: dict[str, int] = {}  # 1: on the path, 2: done
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            if dep not in GRAPH or dep == node:
                continue
            if seen.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in seen:
                visit(dep, [*path, dep])
        seen[node] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)
