"""The bench report's summary: each speed target and whether it is met, the vmap baseline
beside the pack, where the grouped convs stand, and what the fig2 studies cost at the measured
rates. Torch-free: it reads a report (benchmarks/throughput.py's JSON) and composes the
studies; `python benchmarks/gpu_check.py summary JSON` prints it for a saved report.

Targets (issue 25), each on the best ok row of the model's packs (harness or harness+compile,
K > 1) against its best single-model loop (the `strong` row, the best of strong:eager,
strong:compile and strong:cudagraphs that ran):
    resnet20               pack >= 3x the best single loop, pack >= 50% of the bandwidth roofline
    shake_shake_26_2x64d   pack >= 30,000 images/s, pack >= 1.3x its best single loop

GPU-hours of a study = its images (sum over its cells of epochs x training images, as `harness
run -m +experiment=<study> run.plan=true` counts them) / the rate its cells would train at /
3600. The rate: on CUDA the best ok `harness` row of the study's model (the studies pack
train.pack=auto, as many cells as fit, uncompiled; the largest K that fits may be faster than
the best measured); on a CPU the harness K = 1 row (pack=auto is 1 on a CPU), and the hours
are CPU core-hours: wall hours x the report's torch_threads.
"""

from __future__ import annotations

import functools

PACK_METHODS = ("harness", "harness+compile")
STUDIES = ("fig2_decay", "fig2_lite")
# (model, what, threshold): what is "vs_single" (pack / strong), "roofline" (pack / roofline),
# or "images_per_s" (the pack's rate)
TARGETS = (("resnet20", "vs_single", 3.0), ("resnet20", "roofline", 0.5),
           ("shake_shake_26_2x64d", "images_per_s", 30e3),
           ("shake_shake_26_2x64d", "vs_single", 1.3))


def best_row(report: dict, model: str, methods: tuple[str, ...], packs: int | None = None,
             min_packs: int = 1) -> dict | None:
    """The fastest ok row of `model` whose method is one of `methods` (and K = packs, or K >=
    min_packs)."""
    rows = [r for r in report["results"] if r["model"] == model and r["method"] in methods
            and r["status"] == "ok" and (packs is None or r["K"] == packs)
            and r["K"] >= min_packs]
    return max(rows, key=lambda r: r["images_per_s"], default=None)


def _name(row: dict) -> str:
    what = row.get("note") if row["method"] == "strong" else None
    label = f"{row['method']} K={row['K']}"
    if what and ": " in what:
        label = what.rsplit(": ", 1)[1]  # the configuration the strong row is
    return f"{label} {row['images_per_s']:,.0f} img/s"


def target_lines(report: dict) -> list[str]:
    """One line per target: the measured value, the rows it comes from, met or NOT MET."""
    lines = []
    for model, what, need in TARGETS:
        goal = {"vs_single": f"packed {model} >= {need:g}x its best single-model loop",
                "roofline": f"packed {model} >= {need:.0%} of the bandwidth roofline",
                "images_per_s": f"packed {model} >= {need:,.0f} img/s"}[what]
        pack = best_row(report, model, PACK_METHODS, min_packs=2)
        single = best_row(report, model, ("strong",))
        roof = (report.get("roofline_images_per_s") or {}).get(model)
        if pack is None:
            lines.append(f"target {goal}: not measured (no ok pack row with K > 1)")
            continue
        if what == "vs_single":
            if single is None:
                lines.append(f"target {goal}: not measured (no single-model loop ran)")
                continue
            value = pack["images_per_s"] / single["images_per_s"]
            shown = f"{value:.2f}x ({_name(pack)} / {_name(single)})"
        elif what == "roofline":
            if not roof:
                lines.append(f"target {goal}: n/a (no roofline for {report['device']})")
                continue
            value = pack["images_per_s"] / roof
            shown = f"{value:.1%} ({_name(pack)} / {roof:,.0f})"
        else:
            value, shown = pack["images_per_s"], _name(pack)
        lines.append(f"target {goal}: {shown}: {'met' if value >= need else 'NOT MET'}")
    return lines


def vmap_lines(report: dict) -> list[str]:
    """The pack against PyTorch's vmap ensemble at each K where both ran (or why not)."""
    lines = []
    for model in report["settings"]["models"]:
        for row in (r for r in report["results"] if r["model"] == model
                    and r["method"] == "vmap"):
            pack = best_row(report, model, ("harness",), row["K"])
            if row["status"] != "ok":
                lines.append(f"vmap {model} K={row['K']}: {row['status']}: {row.get('note')}")
            elif pack is not None:
                lines.append(f"vmap {model} K={row['K']}: harness pack / vmap ensemble = "
                             f"{pack['images_per_s'] / row['images_per_s']:.2f}x "
                             f"({_name(pack)} / {_name(row)})")
    return lines


def conv_lines(report: dict) -> list[str]:
    """Per model, the range of grouped / dense time over its packed conv shapes."""
    lines = []
    for model in report["settings"]["models"]:
        convs = [c for c in report.get("conv_microbench", [])
                 if c["model"] == model and "error" not in c]
        if convs:
            worst = max(convs, key=lambda c: c["grouped_over_dense"])
            lines.append(
                f"convs {model} K={worst['K']}: grouped / dense time "
                f"{min(c['grouped_over_dense'] for c in convs):.2f}-"
                f"{worst['grouped_over_dense']:.2f} over {len(convs)} shapes (worst "
                f"{worst['in_channels'] // worst['K']}->{worst['out_channels'] // worst['K']} "
                f"at {worst['size']}px)")
    return lines


@functools.cache
def study_size(study: str) -> tuple[int, int, str]:
    """(cells, images to train, model) of `harness run -m +experiment=<study>`: the sum over
    its cells of epochs x training images."""
    from harness.cli.run import cells_of
    from harness.config.validate import planned_images

    cells = cells_of([f"+experiment={study}"])
    (model,) = {c.model.name for c in cells}
    return len(cells), sum(planned_images(c) for c in cells), model


def hours_lines(report: dict, studies: tuple[str, ...] = STUDIES) -> list[str]:
    """The estimated GPU-hours (on a CPU: CPU core-hours) of each study (module docstring)."""
    cuda = report["settings"]["device"].startswith("cuda")
    lines = []
    for study in studies:
        cells, images, model = study_size(study)
        row = (best_row(report, model, ("harness",)) if cuda
               else best_row(report, model, ("harness",), packs=1))
        head = f"{study}: {cells} cells, {images:,} images of {model}"
        if row is None:
            lines.append(f"{head}: no ok harness{'' if cuda else ' K=1'} row of {model} "
                         "measured; hours unknown")
            continue
        hours = images / row["images_per_s"] / 3600
        if cuda:
            lines.append(f"{head} / {_name(row)} = {hours:,.1f} GPU-hours on "
                         f"{report['device']}")
        else:
            threads = report["torch_threads"]
            lines.append(f"{head} / {_name(row)} = {hours * threads:,.0f} CPU core-hours "
                         f"({hours:,.0f} h x {threads} threads on {report['device']}; "
                         "not GPU-hours)")
    return lines


def summary_lines(report: dict) -> list[str]:
    """Everything above, one line each."""
    return [*target_lines(report), *vmap_lines(report), *conv_lines(report),
            *hours_lines(report)]
