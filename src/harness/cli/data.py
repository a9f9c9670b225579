"""`harness data {fetch,info} NAME`: download a dataset (md5-checked) or show what it holds."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from harness.spec.dataset import DATASETS
from harness.train.data import (
    DataError,
    Dataset,
    check,
    download,
    fetch,
    load_dataset,
    one_line,
)


def _info(ds: Dataset) -> str:
    counts = torch.bincount(ds.y_train, minlength=ds.num_classes).tolist()
    return "\n".join([
        f"dataset      {ds.name}",
        f"train        x {tuple(ds.x_train.shape)} {ds.x_train.dtype}, y {tuple(ds.y_train.shape)}",
        f"test         x {tuple(ds.x_test.shape)} {ds.x_test.dtype}, y {tuple(ds.y_test.shape)}",
        f"classes      {ds.num_classes} (train counts: min {min(counts)}, max {max(counts)})",
        f"mean         {[round(v, 4) for v in ds.mean.tolist()]}",
        f"std          {[round(v, 4) for v in ds.std.tolist()]}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m harness data {fetch,info} NAME [--root DIR] [--path FILE] [--download]`."""
    parser = argparse.ArgumentParser(prog="python -m harness data",
                                     description="Fetch or inspect datasets.")
    parser.add_argument("command", choices=("fetch", "info"))
    parser.add_argument("name", choices=list(DATASETS))
    parser.add_argument("--root", default=None, help="data dir (default $HARNESS_DATA or ./data)")
    parser.add_argument("--path", default=None, help=".npz file for the npz dataset")
    parser.add_argument("--download", action="store_true", help="info: fetch when missing")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            if not DATASETS[args.name].fetchable:
                fetch(args.name, args.root)  # raises ValueError: nothing to fetch
            print(download(args.name, args.root))
        else:
            check(args.name, root=args.root, path=args.path, download=args.download)
            print(_info(load_dataset(args.name, root=args.root, path=args.path)))
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"harness data: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0
