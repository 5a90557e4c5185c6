"""Writing a run's reports: report.md, report.html and report.json, each atomically.

Why its own module: the HTML page reuses the Markdown report's tables (``report.run``), so
the one function that writes every format sits above both and neither imports the other's
writer (no import circle between ``report.run`` and ``report.html``).
"""

from __future__ import annotations

from pathlib import Path

from harness.analysis.model import Analysis
from harness.report.html import render_html
from harness.report.run import FORMATS, render_json, render_markdown
from harness.store.files import atomic_write_bytes


def write_reports(a: Analysis, run_dir: Path, formats: list[str]) -> list[Path]:
    """Write report.md / report.html / report.json into ``run_dir`` atomically, as asked."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format {unknown[0]!r}; expected one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    written: list[Path] = []
    for f in dict.fromkeys(formats):
        text = {"md": render_markdown, "json": render_json}[f](a) if f != "html" else render_html(a, run_dir)
        path = run_dir / FORMATS[f]
        atomic_write_bytes(path, text.encode("utf-8"))
        written.append(path)
    return written
