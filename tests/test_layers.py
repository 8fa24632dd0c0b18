"""The package layers: no module of src/sparsefw imports a higher layer (docs/design.md#layers,
README "What is in the box"), read from the source with `ast`, so imports inside functions count
as well.

A module may import its own layer and any layer of a lower tier; the layers of one tier are
independent of each other. `sparsefw/__init__.py` is the facade above every layer (it imports
lazily by name) and is not checked.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

#: lowest tier first; each layer: the top-level modules of sparsefw that make it up
TIERS = (
    {"constraints": {"constraints"}, "graph": {"graph"}},
    {"optim": {"optim"}},
    {"assign": {"assign", "assign_coupled", "assign_linear", "assign_spectral", "assign_step", "radii"}},
    {"compress": {"compress"}},
    {"data": {"data"}},
    {"models": {"models"}},          # models.registry uses data.errors.require_torchvision
    {"experiments": {"experiments"}},
    {"cli": {"cli"}},
)
LAYER_OF = {top: layer for tier in TIERS for layer, tops in tier.items() for top in tops}
TIER_OF = {layer: rank for rank, tier in enumerate(TIERS) for layer in tier}


def module_name(path: Path) -> str:
    """src/sparsefw/compress/filters.py → sparsefw.compress.filters (a package: its __init__'s name)."""
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SOURCE / "sparsefw").rglob("*.py"))}


def imported_modules(source: str, module: str, is_package: bool, known: set[str]):
    """(line, absolute name) of every module imported anywhere in `source` (functions included);
    `from X import y` names X.y where that is a module of `known`, else X."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def layer(name: str) -> str | None:
    """The layer of a module of sparsefw (None for the facade `sparsefw` itself)."""
    parts = name.split(".")
    return LAYER_OF.get(parts[1], f"unplaced top-level module {parts[1]!r}") if len(parts) > 1 else None


def violations(source: str, module: str, is_package: bool, known: set[str], where: str) -> list[str]:
    """One line per import of `source` that goes up a tier, sideways to another layer of the same
    tier, or through the facade."""
    own = layer(module)
    found = []
    for line, target in imported_modules(source, module, is_package, known):
        if target.split(".")[0] != "sparsefw":
            continue
        theirs = layer(target)
        if theirs is None:
            found.append(f"{where}:{line} {module} imports the facade `sparsefw`; import the defining "
                         "module instead")
        elif theirs != own and (theirs not in TIER_OF or TIER_OF[theirs] >= TIER_OF[own]):
            found.append(f"{where}:{line} {module} (layer {own}) imports {target} (layer {theirs})")
    return found


def test_every_top_level_module_has_a_layer():
    tops = {name.split(".")[1] for name in source_modules() if name != "sparsefw"}
    assert tops == set(LAYER_OF), f"place in TIERS: {sorted(tops - set(LAYER_OF))}; " \
                                  f"gone: {sorted(set(LAYER_OF) - tops)}"


def test_no_module_imports_a_higher_layer():
    modules = source_modules()
    found = []
    for module, path in modules.items():
        if module != "sparsefw":
            found += violations(path.read_text(), module, path.name == "__init__.py", set(modules),
                                str(path.relative_to(SOURCE.parent)))
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_graph_needs_only_torch_and_the_standard_library():
    modules = source_modules()
    found = []
    for module, path in modules.items():
        if module.split(".")[:2] == ["sparsefw", "graph"]:
            for line, target in imported_modules(path.read_text(), module, path.name == "__init__.py",
                                                 set(modules)):
                top = target.split(".")[0]
                if target.split(".")[:2] != ["sparsefw", "graph"] and top != "torch" \
                        and top not in sys.stdlib_module_names:
                    found.append(f"{path.relative_to(SOURCE.parent)}:{line} imports {target}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, module, is_package, expected", [
    # the lazy import assign_coupled had before the analysis moved to sparsefw.graph
    ("def coupled_regions(model):\n    from .compress.channels.groups import channel_groups\n",
     "sparsefw.assign_coupled", False,
     ["x.py:2 sparsefw.assign_coupled (layer assign) imports sparsefw.compress.channels.groups "
      "(layer compress)"]),
    ("from ..experiments import train\n", "sparsefw.data.base", False,
     ["x.py:1 sparsefw.data.base (layer data) imports sparsefw.experiments (layer experiments)"]),
    ("from .. import compress\n", "sparsefw.optim", True,
     ["x.py:1 sparsefw.optim (layer optim) imports sparsefw.compress (layer compress)"]),
    ("import sparsefw.constraints\n", "sparsefw.graph.groups", False,
     ["x.py:1 sparsefw.graph.groups (layer graph) imports sparsefw.constraints (layer constraints)"]),
    ("from sparsefw import constrain\n", "sparsefw.compress.prune", False,
     ["x.py:1 sparsefw.compress.prune imports the facade `sparsefw`; import the defining module instead"]),
    ("from .graph import channel_groups\nfrom . import radii\nimport torch\n", "sparsefw.assign_coupled",
     False, []),
    ("from ...graph.capture import export_graph\nfrom .._util import set_submodule\n",
     "sparsefw.compress.channels.per_layer_inplace", False, []),
])
def test_violations_name_the_offending_import(source, module, is_package, expected):
    known = {"sparsefw.compress", "sparsefw.radii", "sparsefw.experiments"}
    assert violations(source, module, is_package, known, "x.py") == expected
