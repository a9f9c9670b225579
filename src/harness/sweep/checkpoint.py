"""A cell's resumable checkpoint: an envelope with a schema version and a checksum.

File layout (`checkpoints/<run_id>.pt`):

    b"HARNESS-CHECKPOINT\\n" + one JSON line {"schema", "run_id", "sha256", "size"} + payload

where payload is `torch.save` of the state `harness.train.loop` yields (model, optimizer,
scaler, rng, epoch, step, elapsed_s) plus the cell's `records` so far.
torch.load checks no CRC, so the sha256 of the payload is what detects flipped bytes.
`load` validates everything before a cell resumes (checksum, schema, run_id, the types of the
top-level keys, 1 <= epoch < T, records holding epochs 1..epoch); a checkpoint that fails is
`Invalid` with one line of reason, and the caller retrains the cell from scratch. The payload
is serialised in memory and written with `harness.fsutil.atomic_write`, so a full disk is a
plain OSError and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from harness.fsutil import atomic_write

MAGIC = b"HARNESS-CHECKPOINT\n"
SCHEMA = 3  # 3: optimizer groups hold lr = alpha, no initial_lr; 2: no "scheduler" state
KEY_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": dict, "optimizer": dict, "scaler": dict, "rng": dict,
    "epoch": int, "step": int, "elapsed_s": (int, float), "records": list,
}


class Invalid(ValueError):
    """A checkpoint that must not be resumed from; the message is one line."""


def encode(state: dict[str, Any], run_id: str) -> bytes:
    """The bytes of a checkpoint file holding `state`."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = {"schema": SCHEMA, "run_id": run_id, "sha256": hashlib.sha256(payload).hexdigest(),
              "size": len(payload)}
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def save(state: dict[str, Any], path: Path, run_id: str) -> None:
    """Write atomically; an OSError (a full disk) leaves the previous checkpoint intact."""
    data = encode(state, run_id)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _unwrap(raw: bytes, run_id: str) -> bytes:
    if not raw.startswith(MAGIC):
        raise Invalid("not a harness checkpoint (no header)")
    line, sep, payload = raw[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(line) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise Invalid("unreadable header")
    if header.get("schema") != SCHEMA:
        raise Invalid(f"schema {header.get('schema')!r}, this harness reads schema {SCHEMA}")
    if header.get("run_id") != run_id:
        raise Invalid(f"belongs to run {header.get('run_id')!r}, not {run_id}")
    if header.get("size") != len(payload) or \
            header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise Invalid("checksum mismatch (corrupted or truncated)")
    return payload


def validate(state: Any, epochs: int) -> dict[str, Any]:
    """`state` if it is a checkpoint of a run of `epochs` epochs, else Invalid."""
    if not isinstance(state, dict):
        raise Invalid(f"holds a {type(state).__name__}, not a dict")
    for key, kind in KEY_TYPES.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise Invalid(f"key {key!r} is {type(value).__name__}, expected "
                          f"{getattr(kind, '__name__', 'a number')}")
    epoch = state["epoch"]
    if not 1 <= epoch < epochs:
        raise Invalid(f"epoch {epoch} is outside 1..{epochs - 1} for a run of {epochs} epochs")
    got = [r.get("epoch") if isinstance(r, dict) else None for r in state["records"]]
    if got != list(range(1, epoch + 1)):
        raise Invalid(f"records hold epochs {got}, expected 1..{epoch}")
    return state


def load(path: Path, run_id: str, epochs: int) -> dict[str, Any] | None:
    """The validated checkpoint, None if there is none; Invalid (one line) if unusable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Invalid(f"cannot read it ({err.strerror or err})") from None
    payload = _unwrap(raw, run_id)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem means "retrain"
        raise Invalid(f"cannot be unpickled ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return validate(state, epochs)
