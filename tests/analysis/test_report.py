"""analysis/report.py (and `harness report`, cli/report.py) end to end on planted studies
written through `records.frame`; the heatmap's frontier marks against stats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import imread

from harness.analysis import curves, frames, heatmaps, report, stats
from harness.cli import report as report_cli
from tests import planted

A6 = [2.0**k for k in range(-9, -3)]   # 6 alphas
L6 = [2.0**k for k in range(-10, -4)]  # 6 lambdas


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SGD+L2 (coupled) and PyTorch-AdamW (coupled in paper units) panels, 2 seeds, with a
    diverged cell, a failed cell (num_classes null, as records writes it) and bad files."""
    runs = tmp_path_factory.mktemp("results") / "fig2_mini" / "runs"
    for df in planted.surface_frames(A6, L6, -1.0, -14.0, -6, noise=0.003, seeds=2,
                                     optimizer="sgd", decay="l2"):
        if not (df["lr"].iloc[0] == A6[-1] and df["decay"].iloc[0] == "l2"
                and df["weight_decay"].iloc[0] == L6[-1]):
            planted.write(runs, df)
    planted.write(runs, planted.cell_frame(0.5, lr=A6[-1], lam=L6[-1], optimizer="sgd",
                                           decay="l2", status="diverged"))
    planted.write(runs, planted.cell_frame(0.5, lr=A6[-1], lam=L6[-1], optimizer="sgd",
                                           decay="l2", status="failed", seed=1,
                                           num_classes=None))
    for df in planted.surface_frames(A6, [2.0**k for k in range(-1, 5)], -1.0, -4.0, -6,
                                     noise=0.003, seeds=2, rng=1, optimizer="adam",
                                     decay="decoupled_lr"):
        planted.write(runs, df)
    (runs / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    bad = planted.cell_frame(0.1, lr=0.1, lam=0.01)
    bad.assign(epoch="one").to_parquet(runs / "string_epoch.parquet")
    bad.assign(optimizer="lion").to_parquet(runs / "lion.parquet")
    return runs.parent


def assert_real_png(path: Path) -> None:
    assert path.stat().st_size > 20_000
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_write_report(study: Path) -> None:
    path = report.write_report(study)
    assert path == study / "report" / "report.md"
    text = path.read_text()
    out = study / "report"
    assert "| SGD+L2 " in text and "-1.0" in text and "coupled" in text
    assert "3 file(s) skipped: 1 × unreadable parquet" in text
    assert "epoch has a non-numeric value 'one'" in text and "unknown optimizer 'lion'" in text
    assert "failed cell: SGD+L2" not in text  # its other seed diverged: the cell is ranked
    assert "cell(s) with a diverged seed" in text
    assert "chosen and scored on the same test set" in text
    assert "σ = 0.3" in text or "σ = 0.2" in text or "σ = 0.4" in text
    assert "decoupled(λ) = decoupled_lr(λ/α) exactly" in text
    assert "in paper units" in text  # the torch-AdamW slope, re-expressed
    assert "τ (epochs)" in text
    margins = text.split("depends on the margin")[1].split("##")[0]
    assert all(f"+{m} pts" in margins for m in (2, 4, 8)) and "| SGD+L2 " in margins
    for stem in ("heatmaps", "learning_curves", "coordinates"):
        assert_real_png(out / f"{stem}.png")
        assert (out / f"{stem}.caption.txt").read_text().split("\n\n")[0] in text
        assert (out / f"{stem}.pdf").stat().st_size > 5_000
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file
    table = pd.read_csv(out / "cells.csv")
    assert len(table) == 72 and table["diverged"].sum() == 1 and "tau_epochs" in table
    assert table.loc[table["decay"] == "decoupled_lr", "tau_epochs"].notna().all()


def test_undetermined_panel_prints_no_slope(tmp_path: Path) -> None:
    runs = tmp_path / "flat" / "runs"
    for df in planted.surface_frames(A6, L6, 0.0, -13.0, -6, noise=0.003):  # λ* off the grid
        planted.write(runs, df)
    text = report.write_report(tmp_path / "flat").read_text()
    section = text.split("## Separability")[1]
    row = next(line for line in section.splitlines() if line.startswith("| SGDW "))
    assert "undetermined (λ* ≈ 2^" in row and "outside the λ grid" in row
    assert "**not testable with this study**" in text


def test_cli(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = study.parent
    assert report_cli.main(["nope", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown study 'nope'" in err and "fig2_mini" in err
    assert report_cli.main(["fig2_mini", "--results-dir", str(results)]) == 0
    assert Path(capsys.readouterr().out.strip()) == study / "report" / "report.md"


def test_only_bad_files_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "bad" / "runs"
    runs.mkdir(parents=True)
    planted.cell_frame(0.1, lr=0.1, lam=0.01).assign(num_classes=0).to_parquet(
        runs / "zero.parquet")
    assert report_cli.main([str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert "report: no usable parquet files" in err and "(1 skipped)" in err


def test_decay_curves_for_a_study_at_one_alpha(tmp_path: Path) -> None:
    """Claim 2's design (Adam at one α: λ = 0, L2 and AdamW at 3 λ, 3 seeds) gets the decay
    curves figure; a 6 x 6 grid (the `study` fixture) does not (its heatmap shows more)."""
    runs = tmp_path / "claim2" / "runs"
    alpha = 2.0**-10
    for seed in range(3):
        planted.write(runs, planted.cell_frame(0.143 + 0.002 * seed, lr=alpha, lam=0.0,
                                               optimizer="adam", decay="none", seed=seed))
        for decay, errs in (("l2", (0.142, 0.139, 0.150)), ("decoupled", (0.140, 0.125, 0.30))):
            for lam, err in zip((2.0**-5, 2.0**-3, 2.0**-1), errs, strict=True):
                planted.write(runs, planted.cell_frame(err + 0.002 * seed, lr=alpha, lam=lam,
                                                       optimizer="adam", decay=decay, seed=seed))
    text = report.write_report(tmp_path / "claim2").read_text()
    assert "## Test error against weight decay at each α\n\n![decay_curves](decay_curves.png)" \
        in text
    assert_real_png(tmp_path / "claim2" / "report" / "decay_curves.png")


def test_no_decay_curves_for_a_full_grid(study: Path) -> None:
    report.write_report(study)
    assert not (study / "report" / "decay_curves.png").exists()


def test_heatmap_draws_the_damage_frontier_where_the_report_finds_it(study: Path) -> None:
    """The orange bars stand in the columns where stats.frontier_points finds the frontier,
    at its λ in cell coordinates (rows: descending λ), labelled with the margin; the figure's
    one legend names them."""
    runs, _ = frames.load_runs(study)
    table, per_run = frames.cells(runs), frames.finals(runs)
    sub = table[table["panel"] == "sgd / l2"]
    points, _ = stats.frontier_points(sub, stats.MARGIN)
    assert len(points) >= 2
    ax = Figure().subplots()
    fit = stats.panel_fits(sub, per_run[per_run["panel"] == "sgd / l2"])
    assert fit.frontier_points == points and fit.margin == stats.MARGIN  # 2 seeds, σ small
    heatmaps.heatmap_panel(ax, sub, set(), Normalize(10, 30), "λ", "t", fit)
    [bars] = [c for c in ax.collections if c.get_label().startswith("damage frontier")]
    assert bars.get_label() == "damage frontier (+2.0 pts)"
    centres = [((s[0][0] + s[1][0]) / 2, s[0][1]) for s in bars.get_segments()]
    lams = np.log2(sorted(sub["lam"].unique(), reverse=True))
    for (col, row), (x, yf) in zip(centres, points, strict=True):
        assert math.isclose(col, A6.index(2.0**x) + 0.5)
        assert math.isclose(row, np.interp(yf, lams[::-1], (np.arange(len(lams)) + 0.5)[::-1]))
    assert ax.get_legend() is None  # no legend on a panel: one below the figure
    figs = {}
    real = heatmaps.save
    try:
        heatmaps.save = lambda fig, out, stem, caption: figs.setdefault(stem, (fig, caption))
        heatmaps.plot_heatmaps(table, per_run, study)
    finally:
        heatmaps.save = real
    fig, caption = figs["heatmaps"]
    [legend] = fig.legends
    assert "damage frontier (per α column)" in [t.get_text() for t in legend.get_texts()]
    assert "damage frontier at a margin of +2.0 pts" in caption


def test_no_margin_table_when_no_frontier(tmp_path: Path) -> None:
    runs = tmp_path / "shallow" / "runs"
    lams = [2.0**k for k in (-14, -13.5, -13, -12.5, -12)]  # error rises < 1 pt over the grid
    for df in planted.surface_frames(A6, lams, 0.0, -13.0, -6, noise=0.003):
        planted.write(runs, df)
    text = report.write_report(tmp_path / "shallow").read_text()
    row = next(line for line in text.split("## Separability")[1].splitlines()
               if line.startswith("| SGDW "))
    assert "undetermined (the frontier lies inside the λ grid in 0 α columns" in row
    assert "depends on the margin" not in text


def test_transfer_figure_for_a_study_over_two_budgets(tmp_path: Path) -> None:
    """A study at two epoch budgets gets the transfer figure (curves.plot_transfer), linked
    from report.md."""
    runs = tmp_path / "budgets" / "runs"
    for epochs in (2, 4):
        for lam in [2.0**k for k in range(-10, 1)]:
            planted.write(runs, planted.cell_frame(
                planted.surface(0.1, lam, 0.0, -5.0, math.log2(0.1)), lr=0.1, lam=lam,
                epochs=epochs, normalized=True))
    text = report.write_report(tmp_path / "budgets").read_text()
    assert "## Best normalized weight decay per training budget\n\n![transfer](transfer.png)" \
        in text
    assert_real_png(tmp_path / "budgets" / "report" / "transfer.png")


def test_transfer_figure_chooses_on_validation_and_draws_lambda_zero_as_a_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At each lambda the alpha is chosen on validation, the ring sits on the budget's
    validation-best cell (not the test-best one), and the optimizer's lambda = 0 cells are a
    dashed line per budget on the decayed axis, not an empty axis of their own."""
    runs = tmp_path / "budgets" / "runs"
    lams = (2.0**-4, 2.0**-3, 2.0**-2)
    for epochs in (2, 4):
        planted.write(runs, planted.cell_frame(0.20 - 0.01 * epochs, val=0.19, lr=2.0**-9,
                                               lam=0.0, optimizer="adam", decay="none",
                                               epochs=epochs))
        for lr, shift in ((2.0**-9, 0.0), (2.0**-8, 0.01)):  # 2^-8: worse on validation
            for lam, test, val in zip(lams, (0.15, 0.12, 0.14), (0.14, 0.15, 0.13),
                                      strict=True):  # test's best 2^-3, validation's 2^-2
                planted.write(runs, planted.cell_frame(
                    test - shift - 0.01 * epochs, val=val + shift, lr=lr, lam=lam,
                    optimizer="adam", decay="decoupled", epochs=epochs, normalized=True))
    drawn: dict[str, Figure] = {}
    save = curves.save
    monkeypatch.setattr(curves, "save", lambda fig, out, stem, caption: drawn.setdefault(
        stem, fig) and save(fig, out, stem, caption))
    report.write_report(tmp_path / "budgets")
    (ax,) = drawn["transfer"].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for epochs in (2, 4):
        line = lines[f"{epochs} epochs"]
        # alpha 2^-9 at every lambda (2^-8 is better on test, worse on validation)
        assert np.allclose(line.get_ydata(), [100 * (t - 0.01 * epochs)
                                              for t in (0.15, 0.12, 0.14)])
        (ring,) = [x for x in ax.get_lines() if x.get_markerfacecolor() == "none"
                   and x.get_color() == line.get_color() and len(x.get_xdata())]
        assert list(ring.get_xdata()) == [2.0**-2]  # validation's best, not test's 2^-3
        zero = [x for x in ax.get_lines() if x.get_linestyle() == "--"
                and x.get_color() == line.get_color()]
        assert len(zero) == 1 and np.allclose(zero[0].get_ydata(), 100 * (0.20 - 0.01 * epochs))
    assert "chosen on validation error" in (tmp_path / "budgets" / "report" /
                                            "transfer.caption.txt").read_text()


def test_a_registered_study_is_judged_by_its_registered_rules(tmp_path: Path) -> None:
    """pilot_cpu's report applies REPRODUCTION.md's pilot rule (harness.analysis.registered),
    not the generic claims table."""
    runs = tmp_path / "pilot_cpu" / "runs"
    for seed, (base, best) in enumerate(((0.130, 0.118), (0.126, 0.116))):
        planted.write(runs, planted.cell_frame(base + 0.005, val=base, lr=0.125, lam=0.0,
                                               decay="none", seed=seed, study="pilot_cpu"))
        planted.write(runs, planted.cell_frame(best + 0.005, val=best, lr=0.125, lam=0.125,
                                               decay="decoupled", seed=seed, study="pilot_cpu"))
    text = report.write_report(tmp_path / "pilot_cpu").read_text()
    assert "## The paper's claims, by the registered rules" in text
    assert "| pilot, 3 epochs |" in text and "gain +1.10 points" in text
    assert "**incomplete (4 of 14 registered runs)**" in text  # no verdict before its runs
    assert "## The paper's claims\n" not in text


def test_a_panel_whose_every_cell_failed_leaves_the_rest_of_the_report(tmp_path: Path) -> None:
    """budgets_cpu mid-study: its 36-epoch AdamW cells had all failed (and were to be rerun);
    the coordinates figure skips that panel instead of failing the whole report."""
    runs = tmp_path / "mid" / "runs"
    for lr in (0.01, 0.02):
        for lam in (1e-4, 1e-3):
            planted.write(runs, planted.cell_frame(0.2 + lr + lam, lr=lr, lam=lam,
                                                   optimizer="sgd", decay="decoupled"))
            planted.write(runs, planted.cell_frame(0.9, lr=lr, lam=lam, optimizer="adam",
                                                   decay="decoupled", status="failed"))
    text = report.write_report(tmp_path / "mid").read_text()
    assert "runs 8: 4 completed, 4 failed" in text, text[:1500]
    assert (tmp_path / "mid" / "report" / "coordinates.png").exists()
