"""The import contract of docs/DESIGN.md: the folder listing of src/harness is the data flow.

    spec -> config -> train -> sweep -> analysis -> cli

A module imports only from its own stage and the stages before it (no arrow back up), and
`harness.fsutil` (atomic writes) and `harness.stops` (signals), the two modules beside the
stages, import nothing of the harness. spec/, config/ and analysis/ never import torch, not
even through another module or inside a function: a spec and a config are checked, and a
report is built, without it. Every import is a plain `import` statement (no importlib), so
this graph is the whole graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SRC = ROOT / "src" / "harness"
STAGES = ("spec", "config", "train", "sweep", "analysis", "cli")
TORCH_FREE = ("spec", "config", "analysis")
HEAVY = ("torch", "torchvision")


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> int:
    """-1 for the package root (harness, __main__, fsutil, stops), else its index."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else -1


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth (functions included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


MODULES = {_module(p): p for p in sorted(SRC.rglob("*.py"))}


def _harness_imports(module: str) -> set[str]:
    """The harness modules `module` imports (a `from harness.x import name` counts as
    harness.x, or harness.x.name when that is a module)."""
    return {name for _, name in _imports(MODULES[module]) if name in MODULES}


def test_every_stage_is_a_package_and_nothing_else_sits_at_the_root():
    root = sorted(p.name for p in SRC.iterdir() if not p.name.startswith(("_", ".")))
    assert root == sorted([*STAGES, "fsutil.py", "stops.py"])
    for stage in STAGES:
        assert (SRC / stage / "__init__.py").is_file()


def test_no_import_runs_back_up_the_stages():
    back = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {name}"
            for m in MODULES for line, name in _imports(MODULES[m])
            if name in MODULES and _stage(name) > _stage(m)
            and not (m == "harness.__main__" and name == "harness.cli")]
    assert back == []


@pytest.mark.parametrize("module", ["harness.fsutil", "harness.stops"])
def test_the_modules_beside_the_stages_import_nothing_of_the_harness(module):
    assert _harness_imports(module) == set()


def test_no_dynamic_imports():
    """The graph above is the whole graph: no module is imported by a name in a string, but
    for the models package, which imports each module of its own folder (each registers its
    networks: adding a model is one module and one YAML)."""
    found = [f"{p.relative_to(ROOT)}" for m, p in MODULES.items()
             if ("import_module" in p.read_text() or "__import__" in p.read_text())
             and m != "harness.train.models"]
    assert found == []


@pytest.mark.parametrize("stage", TORCH_FREE)
def test_torch_free_stages_reach_no_torch(stage):
    """No module of the stage imports torch, directly or through the modules it imports."""
    todo = [m for m in MODULES if _stage(m) == STAGES.index(stage)]
    seen: set[str] = set()
    heavy = []
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        heavy += [f"{MODULES[m].relative_to(ROOT)}:{line} imports {name}"
                  for line, name in _imports(MODULES[m]) if name.split(".")[0] in HEAVY]
        todo += _harness_imports(m) - seen
    assert heavy == []


def test_torch_free_stages_import_without_torch():
    """The same, as Python sees it: importing every module of those stages loads no torch."""
    mods = [m for m in MODULES if _stage(m) in {STAGES.index(s) for s in TORCH_FREE}]
    code = (f"import sys\nfor m in {mods!r}:\n    __import__(m)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


PLUGIN = ROOT / "src" / "hydra_plugins" / "harness_sweeper" / "__init__.py"


def test_hydra_only_through_its_public_interface():
    """Issue 22: no module of the harness, its sweeper plugin or its benchmarks reaches into
    Hydra's private modules (hydra._internal or a name with a leading underscore); the flags
    table in cli/run.py is held against Hydra's parser in tests/cli/test_cli.py."""
    private = [f"{p.relative_to(ROOT)}:{line} imports {name}"
               for p in [*MODULES.values(), PLUGIN, *sorted((ROOT / "benchmarks").glob("*.py"))]
               for line, name in _imports(p)
               if name.split(".")[0] == "hydra"
               and any(part.startswith("_") for part in name.split("."))]
    assert private == []


def test_the_sweeper_plugin_imports_nothing_of_the_harness():
    """Hydra imports every module of its plugin namespace when it starts: the sweeper stays
    Hydra glue, and the harness reaches it through the task it is given."""
    assert [name for _, name in _imports(PLUGIN) if name.split(".")[0] == "harness"] == []
