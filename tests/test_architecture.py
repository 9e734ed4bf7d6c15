"""The import graph of harmonize/ and pipelines/, read from the source (ast; nothing is imported).

What it holds the code to (the README's architecture section):

- no import cycles, counting imports inside functions too;
- the library never imports the jobs (``harmonize`` -> ``pipelines``);
- no private name (``_x``) imported from another module;
- layers, for the library (the data flow: catalog -> items -> grid -> cube -> coregister ->
  pairs -> train -> infer -> timeseries -> io, with the accessor and the CLI on top) and for
  ``pipelines`` (core, evaluation, stages, demo, then the entry points, experiments,
  benchmarks): a module imports only from its own layer and the layers before it;
- the simulator (``harmonize.world``) builds only on bands, qa, providers and errors, and the
  rest of the library (but ``harmonize.testing`` and the CLI) never names it.

Each rule is checked on the real tree and, so a broken checker cannot pass silently, on a small
tree that breaks it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harmonize", "pipelines")

#: The library's layers in order (by module or subpackage under harmonize/).
LIBRARY_LAYERS: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"harmonize.{m}" for m in layer.split())
    for layer in (
        "errors bands qa providers overrides redact credentials band_io",
        "catalog items world testing",
        "grid",
        "cube",
        "coregister bandpass indices sharpen metrics calibration gapfill lowfreq",
        "pairs model deep_harmonization model_import plot_training",
        "train",
        "infer",
        "timeseries phenology lst",
        "plot io webmap classify",
        "accessor",
        "cli",
    )
)
#: pipelines' layers in order: a module may import from its own layer and those before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pipelines.core",),
    ("pipelines.evaluation",),
    ("pipelines.stages",),
    ("pipelines.demo",),
    ("pipelines.run", "pipelines.cli"),
    ("pipelines.experiments", "pipelines.benchmarks"),
)
#: What the simulator may use of the library.
WORLD_MAY_USE = {"harmonize.bands", "harmonize.qa", "harmonize.providers", "harmonize.errors"}
#: Library modules allowed to know the simulator.
KNOWS_THE_WORLD = ("harmonize.world", "harmonize.testing", "harmonize.cli")
WORLD_WORDS = ("world.json", "open_world", "truth.zarr", "manifest.json", "harmonize.world")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages under ``root``."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or module.attribute) starts with."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in known:
            return candidate
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` for every import statement of a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target is not None:
                    yield target, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:  # a submodule
                    yield full, None
                elif (target := _resolve(base, known)) is not None:
                    yield target, alias.name


def graph(root: Path) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Import edges between the packages' modules, and private names imported across modules."""
    known = modules(root)
    edges: dict[str, set[str]] = {m: set() for m in known}
    private = []
    for module, path in known.items():
        for target, name in imports(module, path, known):
            if target == module:
                continue
            edges[module].add(target)
            if name is not None and name.startswith("_") and not name.startswith("__"):
                private.append((module, target, name))
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layer(module: str, layers: tuple[tuple[str, ...], ...]) -> int | None:
    for i, members in enumerate(layers):
        if any(module == m or module.startswith(m + ".") for m in members):
            return i
    return None


def layer_violations(
    edges: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS
) -> list[tuple[str, str]]:
    """``(module, target)`` where a module imports from a later layer of ``layers``."""
    bad = []
    for module, targets in edges.items():
        own = _layer(module, layers)
        for target in targets:
            theirs = _layer(target, layers)
            if own is not None and theirs is not None and theirs > own:
                bad.append((module, target))
    return sorted(bad)


def library_violations(root: Path, edges: dict[str, set[str]]) -> list[str]:
    """Library modules that import the jobs, a simulator that uses more than its four modules,
    and library modules outside :data:`KNOWS_THE_WORLD` that name the simulator."""
    bad = []
    for module, targets in edges.items():
        if module.startswith("harmonize"):
            bad += [f"{module} imports {t}" for t in targets if t.startswith("pipelines")]
        if module.startswith("harmonize.world"):
            outside = (
                {t for t in targets if not t.startswith("harmonize.world")} - WORLD_MAY_USE - {"harmonize"}
            )
            bad += [f"{module} imports {t}" for t in sorted(outside)]
    for module, path in modules(root).items():
        if not module.startswith("harmonize") or module.startswith(KNOWS_THE_WORLD):
            continue
        text = path.read_text()
        bad += [f"{module} names {w!r}" for w in WORLD_WORDS if w in text]
    return bad


# ---------------------------------------------------------------------------------------------
# the real tree


@pytest.fixture(scope="module")
def real() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    return graph(ROOT)


def test_the_tree_has_every_package_module(real) -> None:  # noqa: ANN001
    edges, _ = real
    assert {
        "harmonize.cube.load",
        "harmonize.items",
        "pipelines.core.stores",
        "pipelines.stages.ingest",
    } <= set(edges)
    assert "harmonize.items" in edges["harmonize.cube.plan"]  # the checker sees real imports


def test_no_import_cycles(real) -> None:  # noqa: ANN001
    assert cycles(real[0]) == []


def test_no_private_names_across_modules(real) -> None:  # noqa: ANN001
    assert real[1] == []


def test_pipelines_import_only_earlier_layers(real) -> None:  # noqa: ANN001
    assert layer_violations(real[0]) == []


def test_library_data_flows_one_way(real) -> None:  # noqa: ANN001
    edges = real[0]
    top = {".".join(m.split(".")[:2]) for m in edges if m.startswith("harmonize.")}
    placed = {m for layer in LIBRARY_LAYERS for m in layer}
    assert top <= placed, f"library modules without a layer: {sorted(top - placed)}"
    assert layer_violations(edges, LIBRARY_LAYERS) == []


def test_library_is_blind_to_the_jobs_and_the_simulator(real) -> None:  # noqa: ANN001
    assert library_violations(ROOT, real[0]) == []


# ---------------------------------------------------------------------------------------------
# the checker, on trees that break each rule


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


def test_checker_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pipelines/a.py": "def main():\n    from pipelines.b import x\n",
            "pipelines/b.py": "from pipelines import a\nx = 1\n",
        },
    )
    assert cycles(graph(root)[0]) == [["pipelines.a", "pipelines.b"]]


def test_checker_finds_private_names_and_relative_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "harmonize/gap.py": "def _linear():\n    pass\n",
            "harmonize/sub/__init__.py": "",
            "harmonize/sub/ts.py": "from ..gap import _linear\n",
        },
    )
    assert graph(root)[1] == [("harmonize.sub.ts", "harmonize.gap", "_linear")]


def test_checker_finds_layer_and_library_violations(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pipelines/core/__init__.py": "",
            "pipelines/core/stores.py": "from pipelines.stages.ingest import x\n",
            "pipelines/stages/__init__.py": "",
            "pipelines/stages/ingest.py": "x = 1\n",
            "harmonize/cli.py": "import pipelines.run\n",
            "harmonize/pairs.py": "import json\nPATH = 'world.json'\n",
            "harmonize/world/__init__.py": "from harmonize import cube\n",
            "harmonize/cube.py": "",
        },
    )
    edges, _ = graph(root)
    assert layer_violations(edges) == [("pipelines.core.stores", "pipelines.stages.ingest")]
    assert layer_violations(edges, LIBRARY_LAYERS) == [("harmonize.world", "harmonize.cube")]
    found = library_violations(root, edges)
    assert "harmonize.pairs names 'world.json'" in found
    assert "harmonize.world imports harmonize.cube" in found
    assert any(v.startswith("harmonize.cli imports pipelines") for v in found)
