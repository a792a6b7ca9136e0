"""The layering of the package, checked from its source so it cannot rot (see ARCHITECTURE.md).

ops (numpy only) -> imageio, registry, stats -> visual, explain, report -> app -> cli.
Every import counts, including the ones inside functions.
"""

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "poolcli"
LAYER = {"errors": 0, "formats": 0, "__init__": 0, "ops": 1, "imageio": 2, "registry": 2,
         "stats": 2, "visual": 3, "explain": 3, "report": 3, "app": 4, "cli": 5, "__main__": 6}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(encoding="utf-8"))


def imports(name, tree):
    """(imported module, imported names) for every import statement of a module (absolute
    imports only: a relative one fails here, so the checks below cannot be dodged)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: relative import of {node.module}"
            yield node.module, tuple(a.name for a in node.names)


def room(module):
    """The layer key of a ``poolcli.x.y`` module name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


ALL = list(modules())
OWN = {name for name, _, _ in ALL}


def test_every_module_has_a_layer():
    assert {room(name) for name in OWN} <= set(LAYER)


@pytest.mark.parametrize("name,path,tree", ALL, ids=[n for n, _, _ in ALL])
def test_imports_go_down_only(name, path, tree):
    here = LAYER[room(name)]
    for target, _ in imports(name, tree):
        if target.startswith("poolcli"):
            there = LAYER[room(target)]
            assert there <= here, f"{name} imports {target} from a higher layer"
            assert room(target) != "cli" or room(name) in ("cli", "__main__"), \
                f"{name} imports the CLI"


@pytest.mark.parametrize("name,path,tree", ALL, ids=[n for n, _, _ in ALL])
def test_click_and_rich_only_where_they_belong(name, path, tree):
    for target, _ in imports(name, tree):
        top = target.split(".")[0]
        if top == "click":
            assert room(name) == "cli", f"{name} imports click"
        if top == "rich":
            assert room(name) in ("cli", "report", "explain"), f"{name} imports rich"
        if room(name) == "ops":
            assert top in ("numpy", "poolcli") or top in sys.stdlib_module_names, \
                f"{name} (pure numpy core) imports {target}"
        # the optional extras each have one door, so the rest never pays for their import
        if top in ("dask", "distributed"):
            assert name == "poolcli.app.cluster", f"{name} imports {target}"
        if top in ("fsspec", "s3fs", "gcsfs", "adlfs", "botocore", "aiobotocore"):
            assert name == "poolcli.imageio.store", f"{name} imports {target}"


@pytest.mark.parametrize("name,path,tree", ALL, ids=[n for n, _, _ in ALL])
def test_no_private_names_across_modules(name, path, tree):
    """A module may use ``_name`` helpers of its own package's private modules only."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    for target, names in imports(name, tree):
        if not target.startswith("poolcli"):
            continue
        target_package = target.rsplit(".", 1)[0]
        private_module = target.rsplit(".", 1)[-1].startswith("_")
        if private_module:
            assert target_package == package, f"{name} imports private module {target}"
        for imported in names:
            if imported.startswith("_") and imported != "__version__":
                assert private_module and target_package == package, \
                    f"{name} imports private {target}.{imported}"


def test_no_import_cycles():
    graph = {name: set() for name in OWN}
    for name, _, tree in ALL:
        for target, names in imports(name, tree):
            for candidate in [target] + [f"{target}.{n}" for n in names]:
                if candidate in OWN and candidate != name:
                    graph[name].add(candidate)
    # a package's __init__ re-exporting its submodules is not a cycle with them
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(
                    stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("name,path,tree", ALL, ids=[n for n, _, _ in ALL])
def test_modules_and_functions_stay_small(name, path, tree):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 800, f"{name} has {lines} lines"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            if not body:
                continue
            code = {n.lineno for stmt in body for n in ast.walk(stmt) if hasattr(n, "lineno")}
            assert len(code) <= 80, f"{name}.{node.name} has {len(code)} lines of code"
