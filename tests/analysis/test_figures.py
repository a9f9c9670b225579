"""Every figure the report writes, rendered on planted studies (1, 3 and 6 panels; one alpha;
long names; a half-octave grid) and read back through the renderer: no text over other text,
no legend or label over data, colour scales that cover the values shown, the names readers
know, short titles with the explanation in a caption, multi-seed cells marked, and
power-of-two ticks that read as powers of two."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from harness.analysis import curves, heatmaps, report
from tests import planted
from tests.conftest import ROOT

A5 = [2.0**k for k in range(-9, -4)]
L5 = [2.0**k for k in range(-10, -5)]
LONG_STUDY = "a_study_whose_name_is_as_long_as_a_real_one_gets_in_practice"
RAW_NAMES = re.compile(r"\b(adam|sgd|rmsprop) ?/ ?(none|l2|decoupled|decoupled_lr)\b")


def _one_panel(runs: Path) -> None:
    planted.write_surface(runs, A5, L5, 0.0, -8.0, -7, noise=0.003)


def _three_panels_one_alpha(runs: Path) -> None:
    """Claim 2's design (Adam at one α: λ = 0, Adam+L2 and AdamW at 3 λ, 3 seeds), one AdamW
    cell far above the rest (35%) and one 30% L2 cell that is not an outlier."""
    alpha = 2.0**-10
    for seed in range(3):
        planted.write(runs, planted.cell_frame(0.143 + 0.002 * seed, lr=alpha, lam=0.0,
                                               optimizer="adam", decay="none", seed=seed))
        for decay, errs in (("l2", (0.142, 0.139, 0.150)), ("decoupled", (0.140, 0.122, 0.35))):
            for lam, err in zip((2.0**-7, 2.0**-5, 2.0**-3), errs, strict=True):
                planted.write(runs, planted.cell_frame(err + 0.002 * seed, lr=alpha, lam=lam,
                                                       optimizer="adam", decay=decay,
                                                       seed=seed))


def _six_panels(runs: Path) -> None:
    """fig2_lite's design: Adam with every decay mode, SGD with L2 and decoupled; 1 seed, the
    chosen region with 2; a diverged cell; errors up to about 40% that are not outliers."""
    for i, (opt, decay, s) in enumerate([("adam", "none", 0.0), ("adam", "l2", -1.0),
                                         ("adam", "decoupled", 0.0),
                                         ("adam", "decoupled_lr", -1.0),
                                         ("sgd", "l2", -1.0), ("sgd", "decoupled", 0.0)]):
        lams = [0.0] if decay == "none" else L5 if decay != "decoupled_lr" else \
            [2.0**k for k in range(1, 6)]
        k0 = {0.0: -8.0, -1.0: -15.0}[s] if decay != "decoupled_lr" else -4.0
        for a in A5:
            for lam in lams:
                err = 1.6 * planted.surface(a, lam or 2.0**-8, s, k0, -7)
                seeds = 2 if a == A5[2] else 1
                for seed in range(seeds):
                    status = "diverged" if (i == 4 and a == A5[-1] and lam == lams[-1]) \
                        else "completed"
                    planted.write(runs, planted.cell_frame(err + 0.002 * seed, lr=a, lam=lam,
                                                           optimizer=opt, decay=decay,
                                                           seed=seed, status=status))


def _long_names(runs: Path) -> None:
    """PyTorch AdamW (decoupled_lr) over two schedules and two budgets (1 and 3
    epochs), normalized decay, a long study name: the longest panel labels there are."""
    for opt, decay, sched, epochs in itertools.product(
            ("adam",), ("decoupled_lr",), ("warm_restarts", "cosine"), (1, 3)):
        lams = [2.0**k for k in range(-2, 3)]
        for a in A5[:4]:
            for lam in lams:
                err = planted.surface(a, lam * a * 2**8, 0.0, -1.0, -7)
                planted.write(runs, planted.cell_frame(
                    err, lr=a, lam=lam, optimizer=opt, decay=decay, epochs=epochs,
                    normalized=True, schedule=sched, study=LONG_STUDY))


def _half_octave(runs: Path) -> None:
    """A half-octave grid as the claim-4 study will use, λ written as YAML decimals."""
    alphas = [2.0 ** (k / 2) for k in range(-12, -6)]
    lams = [float(f"{2.0 ** (k / 2):.3g}") for k in range(-16, -10)]  # 0.0039, 0.00552, ...
    planted.write_surface(runs, alphas, lams, 0.0, -6.5, -4.5, noise=0.003, seeds=1)


STUDIES = {"one_panel": _one_panel, "three_panels_one_alpha": _three_panels_one_alpha,
           "six_panels": _six_panels, "long_names": _long_names, "half_octave": _half_octave}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Each planted study's report, with the Figure of every figure it wrote."""
    out = {}
    for name, plant in STUDIES.items():
        study = tmp_path_factory.mktemp("results") / name
        plant(study / "runs")
        out[name] = (study, _report_figures(study))
    return out


def _report_figures(study: Path, out: Path | None = None) -> dict[str, Figure]:
    """write_report(study, out), keeping each Figure that heatmaps or curves hands to
    ``save``."""
    figs: dict[str, Figure] = {}
    with pytest.MonkeyPatch.context() as mp:
        for module in (heatmaps, curves):
            real = module.save

            def keep(fig, out, stem, *args, _real=real):
                figs[stem] = fig
                return _real(fig, out, stem, *args)

            mp.setattr(module, "save", keep)
        report.write_report(study, out)
    return figs


# --- reading a figure back through the renderer -------------------------------------------

def _draw(fig: Figure):
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _ticklabels(ax) -> list:
    """The tick labels drawn: visible, non-empty, at a tick inside the view."""
    out = []
    for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
        for locs, labels in ((axis.get_majorticklocs(), axis.get_majorticklabels()),
                             (axis.get_minorticklocs(), axis.get_minorticklabels())):
            out += [t for loc, t in zip(locs, labels, strict=False)
                    if lo - 1e-9 * abs(lo) <= loc <= hi + 1e-9 * abs(hi)
                    and t.get_visible() and t.get_text().strip()]
    return out


def _labels(fig: Figure) -> list[tuple[str, object]]:
    """(description, artist) of every text outside the data area and every legend."""
    items = [(f"figure text {t.get_text()!r}", t) for t in fig.texts
             if t.get_visible() and t.get_text().strip()]
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
                 *_ticklabels(ax)]
        items += [(f"axes text {t.get_text()!r}", t) for t in texts
                  if t.get_visible() and t.get_text().strip()]
        if ax.get_legend() is not None:
            items.append(("axes legend", ax.get_legend()))
    items += [("figure legend", leg) for leg in fig.legends]
    return items


def _overlap(a: Bbox, b: Bbox, tol: float = 1.0) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tol and min(a.y1, b.y1) - max(a.y0, b.y0) > tol


def layout_problems(fig: Figure) -> list[str]:
    """Every overlap: label text or legend over another, over any axes' data area, or outside
    the figure; a text inside a data area over another there."""
    renderer = _draw(fig)
    problems = []
    labels = [(what, artist.get_window_extent(renderer)) for what, artist in _labels(fig)]
    areas = [(f"data area of {ax.get_title()!r}" if ax.get_title() else "a colour bar or axes",
              ax.get_window_extent(renderer)) for ax in fig.axes
             if ax.get_visible() and ax.axison]
    page = fig.bbox
    for (wa, a), (wb, b) in itertools.combinations(labels, 2):
        if _overlap(a, b):
            problems.append(f"{wa} overlaps {wb}")
    for (wa, a), (wb, b) in itertools.product(labels, areas):
        if _overlap(a, b):
            problems.append(f"{wa} lies over the {wb}")
    for wa, a in labels:
        if a.x0 < page.x0 - 1 or a.y0 < page.y0 - 1 or a.x1 > page.x1 + 1 or a.y1 > page.y1 + 1:
            problems.append(f"{wa} is cut off at the figure's edge")
    for ax in fig.axes:
        inside = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts
                  if t.get_visible() and t.get_text().strip()]
        for (ta, a), (tb, b) in itertools.combinations(inside, 2):
            if _overlap(a, b):
                problems.append(f"in-data text {ta!r} overlaps {tb!r}")
    return problems


# --- the tests ------------------------------------------------------------------------------

EXPECTED = {"one_panel": {"heatmaps", "learning_curves", "coordinates"},
            "three_panels_one_alpha": {"heatmaps", "learning_curves", "coordinates",
                                       "decay_curves"},
            "six_panels": {"heatmaps", "learning_curves", "coordinates"},
            "long_names": {"heatmaps", "learning_curves", "coordinates", "transfer"},
            "half_octave": {"heatmaps", "learning_curves", "coordinates"}}


@pytest.mark.parametrize("name", list(STUDIES))
def test_no_text_overlaps_and_no_legend_over_data(rendered, name: str) -> None:
    """The claim2_cpu defects (three panel subtitles over each other, the frontier legend
    over the "learning rate" label) and their like, in every figure of every planted study."""
    study, figs = rendered[name]
    assert set(figs) == EXPECTED[name]
    problems = {stem: layout_problems(fig) for stem, fig in figs.items()}
    assert {k: v for k, v in problems.items() if v} == {}


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))
            if t.get_text().strip()]


def test_display_names_come_from_one_table(rendered) -> None:
    """Legends, titles and report.md say Adam+L2, AdamW, SGD+L2, SGDW, PyTorch AdamW; never
    'adam / l2'."""
    from harness.analysis import names  # the one table (absent before: the test fails there)

    assert names.method("adam", "l2") == "Adam+L2" and names.method("adam", "decoupled") == \
        "AdamW" and names.method("sgd", "l2") == "SGD+L2" and \
        names.method("sgd", "decoupled") == "SGDW" and \
        names.method("adam", "decoupled_lr") == "PyTorch AdamW (decoupled_lr)" and \
        names.method("adam", "none") == "Adam" and names.method("sgd", "none") == "SGD"
    study, figs = rendered["six_panels"]
    text = "\n".join(t for fig in figs.values() for t in _texts(fig))
    for shown in ("Adam+L2", "AdamW", "SGD+L2", "SGDW", "PyTorch AdamW (decoupled_lr)"):
        assert shown in text
    assert not RAW_NAMES.search(text), RAW_NAMES.search(text)
    _, figs = rendered["three_panels_one_alpha"]
    legend = [t.get_text() for leg in figs["decay_curves"].legends for t in leg.get_texts()]
    assert "Adam+L2" in legend and "AdamW" in legend
    md = (study / "report" / "report.md").read_text()
    assert "| SGD+L2 " in md and "| AdamW " in md and "| PyTorch AdamW (decoupled_lr) " in md
    tables = "\n".join(line for line in md.splitlines() if line.startswith("| "))
    assert not RAW_NAMES.search(tables), RAW_NAMES.search(tables)


def test_titles_are_short_and_the_explanation_is_a_caption(rendered) -> None:
    """At most two lines of figure title and three of panel title; "1 epoch"; the long
    explanation in <figure>.caption.txt and in report.md under the figure."""
    for study, figs in rendered.values():
        out = study / "report"
        md = (out / "report.md").read_text()
        for stem, fig in figs.items():
            _draw(fig)
            title = fig._suptitle.get_text() if fig._suptitle else ""
            assert title.count("\n") <= 1, (stem, title)
            for ax in fig.axes:
                assert ax.get_title().count("\n") <= 2, (stem, ax.get_title())
            caption = (out / f"{stem}.caption.txt").read_text()
            assert len(caption) > 100 and caption.split("\n")[0][:60] in md, stem
            assert not re.search(r"\b1 epochs\b", "\n".join(_texts(fig))), stem
    study, figs = rendered["long_names"]
    text = "\n".join(t for fig in figs.values() for t in _texts(fig))
    assert "1 epoch" in text
    caption = (study / "report" / "heatmaps.caption.txt").read_text()
    assert "hatched" in caption and "damage frontier" in caption and "circled" in caption.lower()


def test_colour_scale_covers_the_values_shown(rendered) -> None:
    """Every cell but the diverged or near-chance ones lies on the scale (the base clipped at
    the 75th percentile: 14.4% and 35.0% were the same yellow); clipped cells get a colour of
    their own, and the colour bar says so."""
    study, figs = rendered["six_panels"]
    cells = pd.read_csv(study / "report" / "cells.csv")
    worst = 100 * cells.loc[~cells["diverged"], "test_error"].max()
    norm, bar = _scale(figs["heatmaps"])
    assert worst > 30 and norm.vmax >= worst - 0.05
    label = bar.ax.get_ylabel()
    assert bar.extend == "max" and "1 cell with a seed at chance or diverged" in label and \
        "clipped" in label
    cmap = figs["heatmaps"].axes[0].collections[0].get_cmap()
    assert not np.allclose(cmap.get_over(), cmap(1.0))  # clipped is not the top colour
    _, figs = rendered["three_panels_one_alpha"]  # 35.2% among 12.4-15.2%
    norm, bar = _scale(figs["heatmaps"])
    assert norm.vmax >= 35.2 - 0.05 and bar.extend == "neither"
    assert "clipped" not in bar.ax.get_ylabel()
    cmap = figs["heatmaps"].axes[0].collections[0].get_cmap()
    assert np.abs(np.subtract(cmap(norm(35.2)), cmap(norm(15.2)))).max() > 0.3
    assert np.abs(np.subtract(cmap(norm(15.2)), cmap(norm(12.4)))).max() > 0.3  # basin too
def _scale(fig: Figure):
    """The figure's one colour bar and its norm."""
    [bar] = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    return bar.norm, bar


def test_cells_with_several_seeds_are_marked(rendered) -> None:
    """In six_panels the third α column has 2 seeds: its cells, and only they, carry a mark."""
    _, figs = rendered["six_panels"]
    fig = figs["heatmaps"]
    _draw(fig)
    for ax in fig.axes:
        cells = [t for t in ax.texts if re.fullmatch(r"\d+\.\d|div", t.get_text())]
        if not cells:
            continue
        marks = [t for t in ax.texts if t.get_text() == "2"]
        columns = {math.floor(t.get_position()[0]) for t in marks}
        rows = sorted(math.floor(t.get_position()[1]) for t in marks)
        n_rows = len({math.floor(t.get_position()[1]) for t in cells})
        assert columns == {2} and rows == list(range(n_rows)), ax.get_title()


def test_half_octave_ticks_read_as_powers_of_two(rendered) -> None:
    """2^-4.5, never 0.0442 beside 2^-4 (λ here is written as 3-digit decimals)."""
    _, figs = rendered["half_octave"]
    ax = figs["heatmaps"].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert len(labels) == 12
    assert all(re.fullmatch(r"\$2\^\{-\d+(\.5)?\}\$", t) for t in labels), labels
    assert "$2^{-4.5}$" in labels and "$2^{-7.5}$" in labels


RESULTS = ROOT / "results"
COMMITTED = sorted(p.parent.name for p in RESULTS.glob("*/runs"))


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_studies_figures_read_well(name: str, tmp_path: Path) -> None:
    """The same layout checks on the committed studies' own data (claim2_cpu's subtitles
    over each other and fig2_lite_cpu's frontier legend over the axis label on the base)."""
    figs = _report_figures(RESULTS / name, tmp_path)
    assert {"heatmaps", "learning_curves"} <= set(figs)
    problems = {stem: layout_problems(fig) for stem, fig in figs.items()}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize("name,lam", [("one_panel", "λ"), ("long_names", "λ_norm")])
def test_coordinates_name_the_lambda_they_draw(rendered, name, lam):
    """A normalized study's coordinates are λ_norm's (claim1_cpu's read "paper λ"; issue 26)."""
    study, figs = rendered[name]
    labels = {ax.yaxis.label.get_text() for ax in figs["coordinates"].axes
              if ax.yaxis.label.get_text().startswith("log₂")}
    assert labels == {f"log₂ {lam} (paper units)", f"log₂ {lam} (torch units)"}
    caption = (study / "report" / "coordinates.caption.txt").read_text()
    assert ("drawn in λ_norm" in caption) == (lam == "λ_norm")
