"""The layout's rules: `fw/` imports nothing from mergekit, folders import one way, no cycles.

Read from the source (ast), so a lazy import inside a function counts as much as a top-level
one; plus one real import of every `fw/` module in a fresh interpreter where neither mergekit
nor click can be found.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mergekit_fw"

# folder -> the package folders it may import (top-level modules settings/plan: everyone)
ALLOWED = {
    "fw": set(),
    "pool": {"fw"},
    "data": {"fw"},
    "report": set(),
    "mergekit": {"fw", "pool", "data", "report"},
    "cli": {"fw", "pool", "data", "report", "mergekit"},
}
TOP = {"settings", "plan", "api"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every absolute module name this file imports (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        edges[name] = {m for m in imports_of(path) if m in modules and m != name}
    return edges


def folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_fw_imports_no_mergekit_in_source():
    offenders = []
    for path in (PACKAGE / "fw").rglob("*.py"):
        for name in imports_of(path):
            if name == "mergekit" or name.startswith("mergekit."):
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders


def test_fw_imports_without_mergekit_or_click_installed():
    """Every fw/ module imports in an interpreter that cannot find mergekit or click (the
    algorithm's errors are plain; the command lines present them)."""
    names = sorted(module_name(p) for p in (PACKAGE / "fw").rglob("*.py"))
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('mergekit', 'click'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\n"
        "assert not any(m.split('.')[0] in ('mergekit', 'click') for m in sys.modules)\n"
        "print('ok', len(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"MERGEKIT_FW_DISABLE": "1", "PATH": "/usr/bin:/bin"},
        cwd=PACKAGE.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_folders_import_one_way():
    bad = []
    for module, targets in graph().items():
        source = folder(module)
        if source is None or source in TOP or source not in ALLOWED:
            continue
        for target in targets:
            dest = folder(target)
            if dest is None or dest in TOP or dest == source:
                continue
            if dest not in ALLOWED[source]:
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, cycles
