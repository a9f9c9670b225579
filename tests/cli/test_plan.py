"""`harness run ... run.plan=true` (make sweep-plan): a dry run that needs no data, downloads
nothing and writes nothing; it prints the plan and, on the same page, the data missing and how
to get it (exit 0)."""

from __future__ import annotations

import pytest

from tests.conftest import harness_cli

NO_NET = "http://127.0.0.1:9"  # a proxy that refuses: a download would fail at once


@pytest.mark.parametrize("study", ["fig2_decay", "fig2_lite", "budgets", "fig1_schedules",
                                   "restarts"])
def test_a_plan_without_the_data_prints_the_plan_and_how_to_get_it_and_writes_nothing(
        tmp_path, study):
    work, empty = tmp_path / "work", tmp_path / "no-data"
    work.mkdir()
    empty.mkdir()
    proc = harness_cli(["run", "-m", f"+experiment={study}", "run.plan=true"], cwd=work,
                       timeout=300, env={"HARNESS_DATA": str(empty), "HTTP_PROXY": NO_NET,
                                         "HTTPS_PROXY": NO_NET, "http_proxy": NO_NET,
                                         "https_proxy": NO_NET})
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "harness run: plan: " in out and " images to train" in out
    missing = [line for line in out.splitlines() if "plan: data missing: " in line]
    assert len(missing) == 1, out[-3000:]
    assert "CIFAR-10 not found" in missing[0] and str(empty) in missing[0]
    assert "python -m harness data fetch cifar10 --root DIR" in missing[0]
    assert "cannot be downloaded" not in out + proc.stderr      # no download was tried
    assert sorted(p.name for p in work.rglob("*")) == []       # no outputs/, no results/
    assert sorted(p.name for p in empty.rglob("*")) == []
