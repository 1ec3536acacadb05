"""The layers of docs/architecture.md are true: every module in one layer, no import against them, no circle."""

import ast
import fnmatch
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "architecture.md"


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in (REPO / "ks").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layers() -> list[tuple[str, list[str]]]:
    """The page's ``layers`` block: one line per layer, top first, its name then the modules' patterns."""
    block = re.search(r"```layers\n(.*?)```", PAGE.read_text(), re.S)
    assert block, "docs/architecture.md has no ```layers block"
    rows = [line.split() for line in block.group(1).splitlines() if line.strip()]
    return [(row[0], row[1:]) for row in rows]


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The modules of the package that ``name`` imports when it runs (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ks"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "ks":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


def layer_of(name: str, table: list) -> list[int]:
    return [i for i, (_, patterns) in enumerate(table) if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def test_every_module_is_in_exactly_one_layer():
    table = layers()
    placed = {name: layer_of(name, table) for name in modules()}
    assert {n: ls for n, ls in placed.items() if len(ls) != 1} == {}, "modules in no layer or in several"


def test_no_import_runs_against_the_layers():
    table, known = layers(), modules()
    against = []
    for name, path in known.items():
        (mine,) = layer_of(name, table)
        for used in imports(name, path, known):
            (theirs,) = layer_of(used, table)
            if theirs < mine:
                against.append(f"{name} ({table[mine][0]}) imports {used} ({table[theirs][0]})")
    assert against == []


def test_no_module_imports_itself_through_others():
    known = modules()
    # A package's __init__ and its own modules may use each other (a blueprint and its views).
    graph = {name: {used for used in imports(name, path, known)
                    if not (used.startswith(name + ".") or name.startswith(used + "."))}
             for name, path in known.items()}
    circles, state = [], {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for used in sorted(graph[name]):
            if state.get(used) == "open":
                circles.append(" -> ".join(path[path.index(used):] + [used]) if used in path else used)
            elif used not in state:
                visit(used, path + [used])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []
