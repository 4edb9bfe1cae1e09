"""The import graph of pyheadscale and derp, read statically: every import counts, wherever it sits in a
module (under `if TYPE_CHECKING:` or inside a function too).

Dependencies point one way: the composition root (pyheadscale.app) imports the API, never the reverse, and the
DERP relay owns its mesh links, which report back through callbacks instead of importing the relay. The key
types (pyheadscale.tailkey) are shared by both and import nothing else of ours, so the relay runs alone
(python -m derp).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pyheadscale", "derp")


def _module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that `module` imports (`from a import b` counts as a.b when that is a module)."""

    def ours(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(ours(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package[: len(package) - node.level + 1]
                base = ".".join([*head, base] if base else head)
            found.update(ours(f"{base}.{alias.name}") for alias in node.names)
    return {name for name in found if name is not None and name != module}


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    known = _module_files()
    return {module: frozenset(_imported(module, path, known)) for module, path in known.items()}


def reachable(start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    graph, seen, todo = import_graph(), set(), [start]
    while todo:
        for name in graph[todo.pop()]:
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_the_graph_sees_known_imports() -> None:
    """The reader finds what is plainly there: an empty answer below means no import, not a blind reader."""
    graph = import_graph()
    assert "derp.mesh" in graph["derp.server"]
    assert "pyheadscale.api.app" in graph["pyheadscale.app"]
    assert "pyheadscale.api.context" in graph["pyheadscale.api.resource"]
    assert "pyheadscale.tailkey" in graph["derp.handshake"]
    assert "pyheadscale.tailkey" in graph["pyheadscale.control.ts2021"]


def test_the_derp_mesh_never_imports_the_relay() -> None:
    assert "derp.server" not in reachable("derp.mesh")


def test_the_apis_never_import_the_composition_root() -> None:
    """Neither the REST API nor the gRPC server that shares its service reaches pyheadscale.app."""
    apis = [name for name in import_graph() if name.startswith(("pyheadscale.api.", "pyheadscale.grpc."))]
    assert len(apis) > 10
    assert {name for name in apis if "pyheadscale.app" in reachable(name)} == set()


def test_derp_and_the_key_types_stand_alone() -> None:
    """Of pyheadscale, derp needs only the key types, and they need nothing else of ours."""
    derp = [name for name in import_graph() if name == "derp" or name.startswith("derp.")]
    assert derp
    allowed = {"pyheadscale", "pyheadscale.tailkey"}
    assert {
        name for name in derp if {m for m in reachable(name) if m.startswith("pyheadscale")} - allowed
    } == set()
    assert reachable("pyheadscale.tailkey") == set()
