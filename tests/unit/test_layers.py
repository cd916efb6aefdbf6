"""The package layers, read from the source (every `import` in lab/**/*.py, including those inside
functions and under TYPE_CHECKING), so a rule broken anywhere fails here:

    lab.api, lab.cli -> lab.services -> lab.console -> lab.hypervisor -> lab.domain
                                         lab.console -> lab.storage -> lab.domain
    lab.client (scripts, CI, the CLI, the pytest plugin) -> lab.domain, lab.settings

(a layer may skip the ones under it). The daemon (lab.services) runs a scenario's checks with
the client's transport-agnostic console session (`lab.client.session`, `lab.client.checks`) over
an in-process transport; that is the one way into lab.client from below the front ends, and none
of them imports the HTTP client (`lab.client.http`; loaded with the package, never called: the
daemon does not call itself).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LAB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The lab modules `path` imports: `from X import y` counts as X.y when that is a module (the
    package X is already being imported then), else as X."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.add(name if name in modules else base)
    return {name for name in found if name in modules and name != module}


def import_graph(root: Path = LAB) -> dict[str, set[str]]:
    """Every lab module and the lab modules it imports."""
    files = {_module_name(p): p for p in root.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def layer(module: str) -> str:
    """The top-level subpackage (`lab.api`) or module (`lab.settings`) a module belongs to."""
    return ".".join(module.split(".")[:2])


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    layers: dict[str, set[str]] = {}
    for module, imported in graph.items():
        edges = layers.setdefault(layer(module), set())
        edges.update(layer(i) for i in imported if layer(i) != layer(module))
    return layers


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in `graph` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


GRAPH = import_graph()
LAYERS = layer_graph(GRAPH)


def _offenders(sources: str, forbidden: Iterable[str]) -> list[str]:
    """`module -> imported` pairs where a module of layer `sources` imports a forbidden one."""
    banned = tuple(forbidden)
    return sorted(
        f"{module} -> {imported}"
        for module, imported_set in GRAPH.items()
        if layer(module) == sources
        for imported in imported_set
        if any(imported == b or imported.startswith(b + ".") for b in banned)
    )


def test_the_graph_sees_the_packages() -> None:
    assert {"lab.api", "lab.cli", "lab.client", "lab.console", "lab.domain", "lab.hypervisor",
            "lab.services", "lab.storage"} <= set(LAYERS)  # fmt: skip
    assert "lab.client.session" in GRAPH["lab.client.checks"]


def test_no_cycle_among_the_top_level_packages() -> None:
    assert find_cycle(LAYERS) is None, " -> ".join(find_cycle(LAYERS) or [])


def test_no_cycle_among_modules() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


UP = ["lab.api", "lab.cli", "lab.pytest_plugin"]
# (layer, what it must not import, why)
RULES = [
    ("lab.domain", [*UP, "lab.services", "lab.console", "lab.hypervisor", "lab.storage",
                    "lab.client", "lab.settings"], "pure models"),
    ("lab.storage", [*UP, "lab.services", "lab.console", "lab.hypervisor", "lab.client"],
     "under the console"),
    ("lab.hypervisor", [*UP, "lab.services", "lab.console", "lab.client", "lab.storage"],
     "under the console; the services join it to storage (e.g. the KVM verdict's cache)"),
    ("lab.console", [*UP, "lab.services", "lab.client"], "daemon-only; scripts use lab.client"),
    ("lab.services", [*UP, "lab.client.http"],
     "only lab.api knows HTTP; the daemon never calls itself"),
    ("lab.client", [*UP, "lab.services", "lab.console", "lab.hypervisor", "lab.storage"],
     "remote users' side: it talks to the daemon over its socket"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_layer_rule(source: str, forbidden: list[str], why: str) -> None:
    assert _offenders(source, forbidden) == [], why


def test_the_daemon_reaches_only_the_clients_console_session() -> None:
    allowed = {"lab.client", "lab.client.session", "lab.client.checks"}
    below = [m for m in GRAPH if layer(m) in {"lab.services", "lab.console", "lab.hypervisor",
                                              "lab.storage", "lab.domain"}]  # fmt: skip
    reached = sorted(f"{m} -> {i}" for m in below for i in GRAPH[m]
                     if layer(i) == "lab.client" and i not in allowed)  # fmt: skip
    assert reached == []


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_a_vm_comes_to_be_only_through_create_from_definition() -> None:
    """Every front end (lab file, ARM PUT, scenario, scale-set instance) creates a VM through
    `VmService.create_from_definition`, where its password is hashed and its boot takes a slot;
    nothing else in the package builds a `NewVm` or calls `VmService.create`."""
    home = LAB / "services" / "vms.py"
    elsewhere = sorted(
        f"{p.relative_to(LAB.parent)}:{n}"
        for p in LAB.rglob("*.py") if p != home
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "NewVm(" in line or "vms.create(" in line
    )  # fmt: skip
    assert elsewhere == []
