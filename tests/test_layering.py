"""The layering the design relies on, checked from the source's imports (lazy ones included).

- A running component imports library modules with `_KFP_RUNTIME=true`, where `kfp.dsl` has no
  authoring API: only the `component.py` wrappers (and `pipelines/`) may import `kfp.dsl`.
- The serving image copies the server and the model contract only: serving imports nothing
  else of ctloop, and the contract imports nothing else of `components/`.
- Step families (`components/<family>/`, and the shared modules beside them) depend on each
  other without cycles, so each can be read, tested and reused from its dependencies up.
"""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = "component.py"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("ctloop", *parts))


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in its body, as absolute dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _family(module: str) -> str | None:
    """`ctloop.components.drift.monitor` -> `drift`; `ctloop.components.table_io` ->
    `table_io`; None outside components/."""
    parts = module.split(".")
    if parts[:2] != ["ctloop", "components"] or len(parts) < 3:
        return None
    return parts[2]


def _uses_kfp_authoring(imports: set[str]) -> bool:
    return any(name == "kfp.dsl" or name.startswith("kfp.dsl.") for name in imports)


LIBRARY_MODULES = [p for p in _sources("components") if p.name != WRAPPER]


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_modules_do_not_import_kfp_authoring(path):
    assert not _uses_kfp_authoring(_imports(path)), (
        f"{path.relative_to(ROOT)} imports kfp.dsl: a running component cannot import it "
        "(KFP's runtime kfp.dsl has no authoring API); keep it in a component.py wrapper"
    )


def test_the_checker_sees_kfp_authoring_and_lazy_imports(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n    from kfp import dsl\n    import ctloop.components.drift\n")
    imports = _imports(source)
    assert _uses_kfp_authoring(imports)
    assert _family("ctloop.components.drift") == "drift"


@pytest.mark.parametrize("path", _sources("serving"), ids=lambda p: p.name)
def test_serving_imports_only_the_model_contract(path):
    outside = sorted(
        name
        for name in _imports(path)
        if name.startswith("ctloop.")
        and not name.startswith(("ctloop.serving", "ctloop.components.contract"))
    )
    assert outside == [], (
        f"serving/{path.name} imports {outside}; serving may import only the contract"
    )


@pytest.mark.parametrize("path", _sources("components/contract"), ids=lambda p: p.name)
def test_the_contract_imports_nothing_else_of_components(path):
    outside = sorted(
        name
        for name in _imports(path)
        if name.startswith("ctloop.")
        and name not in ("ctloop.components", "ctloop.components.contract")
        and not name.startswith("ctloop.components.contract.")
    )
    assert outside == [], f"contract/{path.name} imports {outside}"


def _family_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _sources("components"):
        family = _family(_module_name(path))
        if family is not None:  # not components/__init__.py
            graph.setdefault(family, set())
    for path in _sources("components"):
        family = _family(_module_name(path))
        for name in _imports(path) if family is not None else ():
            other = _family(name)
            if other in graph and other != family:
                graph[family].add(other)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that returns to its start, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_step_families_import_each_other_without_cycles():
    graph = _family_graph()
    assert {"contract", "table_io", "drift", "train", "batch_scoring"} <= set(graph)
    cycle = _cycle(graph)
    assert cycle is None, "families import each other in a cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_and_passes_a_chain():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize(
    "path", sorted((ROOT / "tests" / "benchmarks").glob("*.py")), ids=lambda p: p.name
)
def test_benchmarks_import_only_names_that_exist(path):
    """pytest does not collect the benchmarks, so a moved module would break `make bench`
    unnoticed: every ctloop name they import must still be there."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ctloop"):
            module = importlib.import_module(node.module)
            missing += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if not hasattr(module, alias.name) and not _is_submodule(node.module, alias.name)
            ]
    assert missing == [], f"{path.name} imports names that no longer exist: {missing}"


def _is_submodule(package: str, name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{package}.{name}") is not None
    except ModuleNotFoundError:  # `package` is a module, not a package
        return False
