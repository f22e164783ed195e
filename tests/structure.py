"""The house's shape, checked: module and function sizes, import cycles, public names nothing uses.

    python tests/structure.py          # prints every finding; exit 1 if any

``tests/unit/test_structure.py`` runs it with the suite, so CI keeps the shape.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["findings"]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_run"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # from `def` to its last line; decorators aside
# where a public name may be used from: the package, its tests, benches, packaging and entry points
USERS = ("edge_run", "tests", "bench", "packaging")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The edge_run modules a module imports when it runs: lazy imports included, typing-only ones not."""
    out: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in out if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _public_names(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = node.value
            if isinstance(value, ast.List | ast.Tuple):
                return [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _corpus() -> Counter[str]:
    words: Counter[str] = Counter()
    for folder in USERS:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".spec", ".sh"} and ".venv" not in path.parts:
                words.update(re.findall(r"\w+", path.read_text(encoding="utf-8", errors="replace")))
    words.update(re.findall(r"\w+", (ROOT / "pyproject.toml").read_text(encoding="utf-8")))
    return words


def findings() -> list[str]:
    modules = _modules()
    known = set(modules)
    out: list[str] = []
    graph: dict[str, set[str]] = {}
    words = _corpus()
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines (at most 60)")
        graph[name] = _imports(tree, name, path.name == "__init__.py", known)
        own = Counter(re.findall(r"\w+", text))
        for public in _public_names(tree):
            # used: named anywhere but the module itself, or more often in it than its definition and __all__
            if words[public] - own[public] == 0 and own[public] <= 2:
                out.append(f"{path.relative_to(ROOT)}: public name {public} is used nowhere")
    out += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return out


if __name__ == "__main__":
    found = findings()
    print("\n".join(found) or "the structure holds")
    sys.exit(1 if found else 0)
