"""The only Hydra entry: `python -m harness run <overrides>` trains every cell it is given.

    argv --validate--> Hydra (single run or -m sweep, any launcher) --> _task(cfg)
         --> config.expand(cfg): one Config per (lr, weight_decay) --> cells.run_cell(...)

Bad input is caught before Hydra starts: every override is composed and validated, and the
first problem is printed as one line (exit 2, nothing written). Each Hydra job writes its
cells' outcomes to `outcomes.json` in its job directory; after Hydra returns, `main` reads
them all (from any launcher, local or Slurm), prints the summary and exits non-zero only if
a cell failed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from harness.cells import run_cells
from harness.config import ConfigError, expand, planned_images

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
OUTCOMES = "outcomes.json"


def _pow2(low: Any, high: Any) -> list[float]:
    """${pow2:a,b} -> [2^a, 2^(a+1), ..., 2^b]."""
    return [2.0 ** k for k in range(int(low), int(high) + 1)]


if not OmegaConf.has_resolver("pow2"):
    OmegaConf.register_new_resolver("pow2", _pow2)


def _group_options(group: str) -> list[str]:
    folder = CONFIGS / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _explain(err: Exception, overrides: list[str]) -> str:
    """One line out of Hydra's multi-line composition errors."""
    text = str(err)
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        return (f"{group}={option} is not valid; choose one of: "
                f"{', '.join(_group_options(group))}")
    key = re.search(r"Could not override '([^']+)'|Key '([^']+)' is not in struct", text)
    if key:
        name = key.group(1) or key.group(2)
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        try:
            base = _compose([o for o in overrides if not o.startswith(name)])
            node = OmegaConf.select(base, parent) if parent else base
            valid = ", ".join(sorted(str(k) for k in node.keys() if k not in ("hydra", "grid")))
            where = f" of {parent}" if parent else ""
            return f"{name} is not a valid key; valid keys{where}: {valid}"
        except Exception:  # noqa: BLE001 - fall back to Hydra's first line
            pass
    return text.strip().splitlines()[0]


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="config", overrides=overrides)


def _validation_sets(overrides: list[str]) -> list[list[str]]:
    """Each sweep value once: the first values together, then one value changed at a time."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[o.input_line] if not o.is_sweep_override() else
               [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
               for o in parsed]
    first = [c[0] for c in choices]
    sets = [first]
    for i, c in enumerate(choices):
        sets += [first[:i] + [v] + first[i + 1:] for v in c[1:]]
    return sets


def validate(overrides: list[str]) -> None:
    """Compose and expand every configuration the overrides name; raise ConfigError."""
    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        sets = _validation_sets(plain)
    except Exception as err:  # noqa: BLE001 - a syntax error in an override
        raise ConfigError(f"cannot parse overrides: {str(err).strip().splitlines()[0]}") from None
    for override_set in sets:
        try:
            cfg = _compose(override_set)
            raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - Hydra/OmegaConf composition errors
            raise ConfigError(_explain(err, override_set)) from None
        expand(raw)


def _task(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)
    cells = expand(raw)
    outcomes = run_cells(cells)
    images = sum(planned_images(c) or 0 for c in cells if outcomes[c.run_id] == "planned")
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUTCOMES).write_text(json.dumps({"outcomes": outcomes, "images": images}))


def _hydra(argv: list[str]) -> None:
    old = sys.argv
    sys.argv = ["harness run", *argv]
    try:
        hydra.main(config_path=str(CONFIGS), config_name="config", version_base=None)(_task)()
    finally:
        sys.argv = old


def summarize(outcomes: dict[str, str]) -> str:
    counts = Counter(outcomes.values())
    order = ("completed", "diverged", "failed", "skipped", "claimed", "planned", "done")
    parts = [f"{counts[k]} {k}" for k in order if counts[k]]
    return f"{len(outcomes)} cells: " + (", ".join(parts) or "none")


def main(argv: list[str]) -> int:
    flags = [a for a in argv if a.startswith("-")]
    overrides = [a for a in argv if not a.startswith("-")]
    if any(f in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for f in flags):
        _hydra(argv)
        return 0
    try:
        validate(overrides)
    except ConfigError as err:
        print(f"harness run: error: {err}", file=sys.stderr)
        return 2
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{os.getpid()}"
    extra = [f"hydra.run.dir=outputs/${{study}}/run-{stamp}",
             f"hydra.sweep.dir=outputs/${{study}}/sweep-{stamp}"]
    plan = any(o.lower() == "run.plan=true" for o in overrides)
    if plan:
        extra.append("hydra/launcher=basic")
    user_set = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    extra = [e for e in extra if e.split("=", 1)[0] not in user_set]
    try:
        _hydra(flags + overrides + extra)
    except ConfigError as err:  # e.g. a batch larger than an npz training set
        print(f"harness run: error: {err}", file=sys.stderr)
        return 2
    outcomes: dict[str, str] = {}
    images = 0
    for path in Path("outputs").glob(f"*/*-{stamp}/**/{OUTCOMES}"):
        job = json.loads(path.read_text())
        outcomes |= job["outcomes"]
        images += job["images"]
    print(f"harness run: {summarize(outcomes)}")
    if plan:
        print(f"harness run: plan: {len(outcomes)} cells, "
              f"{sum(o == 'done' for o in outcomes.values())} done, {images:,} images to train")
    return 1 if "failed" in outcomes.values() else 0
