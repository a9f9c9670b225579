"""Read the history of an offline W&B run from its `.wandb` transaction log.

The file is a 7-byte header (":W&B", magic 0xBEE1, version) followed by LevelDB-log style
32 KiB blocks of records: crc32 (4 bytes), length (2, little endian), type (1: full,
2: first, 3: middle, 4: last), data; each assembled record is a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> list[bytes]:
    raw = Path(path).read_bytes()
    assert raw[:4] == b":W&B", "not a W&B transaction log"
    out, pending, pos = [], b"", HEADER
    while pos + 7 <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < 7:                       # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += data
        if kind in (1, 4):
            out.append(pending)
            pending = b""
    return out


def history(path: Path) -> list[dict]:
    """The logged history rows, in order, as {key: value} dicts."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for blob in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(blob)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def config(path: Path) -> dict:
    """The run's config as logged: the run record's config, then every config update."""
    from wandb.proto import wandb_internal_pb2

    out = {}
    for blob in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(blob)
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else \
            record.config.update if kind == "config" else []
        out |= {item.key: json.loads(item.value_json) for item in items}
    return out
