"""The packaged YAML of `configs/`, read without Hydra or torch: where a kind's names live.

`configs/` ships as the package `harness.configs` (pyproject.toml maps the folder); a checkout
on PYTHONPATH that was never installed reads the folder beside `src/`.
"""

from __future__ import annotations

import importlib.util
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml


def group(name: str) -> list[dict[str, Any]]:
    """The YAML files of config group `name` (e.g. optimizer), each as a dict, by file name."""
    if importlib.util.find_spec("harness.configs") is not None:
        folder = files("harness.configs") / name
    else:
        folder = Path(__file__).resolve().parents[3] / "configs" / name
    return [yaml.safe_load(path.read_text())
            for path in sorted(folder.iterdir(), key=lambda p: p.name)
            if path.name.endswith(".yaml")]
