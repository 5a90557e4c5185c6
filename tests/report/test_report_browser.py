"""The HTML report in a real headless browser (Chromium from Debian), at 1280 px and at phone
width (400 px), checked with the page's own DOM through the DevTools protocol (tests/cdp.py):
no table wider than the viewport, the summary before any table, each configuration's plot
inside its own section, one heatmap cell per (configuration, dimension). Screenshots are
kept under the test's tmp dir (and copied to $REPORT_SCREENSHOTS when set) for a human look.
Skipped only where no Chromium is installed (CI installs it)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
WIDTHS = (1280, 400)

# Runs in the page: open every section, then measure with the DOM.
MEASURE = """(() => {
document.querySelectorAll('details').forEach(d => { d.open = true; });
const vw = document.documentElement.clientWidth;
const tables = [...document.querySelectorAll('table')].map(t => { const r = t.getBoundingClientRect();
  return {cls: t.className, left: Math.floor(r.left), right: Math.ceil(r.right)}; });
const summary = document.getElementById('summary'), first = document.querySelector('table');
const plots = [...document.querySelectorAll('img.plot[data-config]')].map(i => ({config: i.dataset.config,
  section: (i.closest('details.config') || {dataset: {}}).dataset.config || null}));
const cells = [...document.querySelectorAll('table.heatmap td.cell')].map(td => [td.dataset.config, td.dataset.dim]);
const columns = [...document.querySelectorAll('table.heatmap thead th')].slice(2).map(th => th.title);
const configs = [...document.querySelectorAll('details.config')].map(d => d.dataset.config);
return JSON.stringify({viewport: vw, page_width: document.documentElement.scrollWidth, tables, plots, cells,
  columns, configs, summary_first: !!(summary && first &&
    (summary.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING))});
})()"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def check_page(html: Path, shots: Path, profile: Path) -> dict[int, dict]:
    """Screenshot and measure ``html`` at each width; assert the layout rules; return the
    measurements per width."""
    from tests.report.cdp import Browser

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    shots.mkdir(parents=True, exist_ok=True)
    found = {}
    with Browser(browser, profile) as b:
        for width in WIDTHS:
            b.open(html.as_uri(), width, 2400)
            shot = shots / f"report-{width}.png"
            b.screenshot(shot)
            assert shot.stat().st_size > 10_000  # a page with content, not a blank frame
            m = json.loads(b.evaluate(MEASURE))
            found[width] = m
            assert m["viewport"] == width
            assert m["page_width"] <= width, f"page scrolls sideways at {width} px"
            wide = [t for t in m["tables"] if t["right"] > width or t["left"] < 0]
            assert not wide, f"tables wider than the {width} px viewport: {wide}"
            assert m["summary_first"], "the summary must come before any table"
            assert m["plots"] and all(p["config"] == p["section"] for p in m["plots"]), m["plots"]
            assert len(m["cells"]) == len(m["configs"]) * len(m["columns"])
            assert {tuple(c) for c in m["cells"]} == {(c, d) for c in m["configs"] for d in m["columns"]}
    if os.environ.get("REPORT_SCREENSHOTS"):
        target = Path(os.environ["REPORT_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, target / f"{html.parent.name}-{png.name}")
    return found


def test_synthetic_report_layout_in_chromium(tmp_path, monkeypatch):
    """The golden test's analysis (long reasons, a pipe in a cell, a skipped config)."""
    pytest.importorskip("matplotlib")
    from harness.report.write import write_reports
    from tests.report.test_report import make_analysis, make_run_dir

    run = make_run_dir(tmp_path)
    write_reports(make_analysis(), run, ["html"])
    m = check_page(run / "report.html", tmp_path / "shots", tmp_path / "profile")
    assert m[400]["columns"] == ["repeat", "process", "batch", "seed", "dtype"]


@pytest.mark.slow
def test_html_report_of_a_real_run_in_chromium(cli, tmp_path, tiny_gpt2):
    """A real run where batch 2 diverges from batch 1 (not ready: the gate fails), so every
    configuration has a worst pair to plot."""
    pytest.importorskip("matplotlib")
    if _chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    from tests.execution.test_matrix_runner import mini_matrix

    matrix = mini_matrix(
        tmp_path, axes={"seed": [1], "threads": [1], "batch_size": [1, 2], "dtype": ["float32", "bfloat16"]}
    )
    res = cli("run", str(matrix), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 1 and "GATE FAILED" in res.stderr, res.stderr  # batch is judged by default
    m = check_page(tmp_path / "run" / "report.html", tmp_path / "shots", tmp_path / "profile")
    assert len(m[1280]["configs"]) == 2 and len(m[1280]["plots"]) == 2
