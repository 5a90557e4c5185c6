"""A run's analysis as saved in its report.json (upgraded from older schema versions), or
analysed afresh when the run has no report yet: what ``harness show`` reads.

Why prefer report.json: it is the data source every report was rendered from, so the
terminal shows exactly what the HTML and Markdown show, in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.analysis.model import ANALYSIS_SCHEMA_VERSION, Analysis
from harness.analysis.summary import summarize
from harness.digests import strict_json_loads
from harness.spec.tasks import first_validation_problem
from harness.store.run import StoreError

REPORT_JSON = "report.json"


def upgrade_analysis(doc: dict[str, Any]) -> Analysis:
    """A report.json document of any known version as the current Analysis; a newer
    version is refused (ValueError naming it)."""
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or version < 1 or version > ANALYSIS_SCHEMA_VERSION:
        raise ValueError(
            f"report.json schema_version {version!r} is not one this harness reads (1..{ANALYSIS_SCHEMA_VERSION})"
        )
    doc = dict(doc)
    if version == 1:  # 1 -> 2: the summary is rebuilt from the configurations
        doc["schema_version"] = ANALYSIS_SCHEMA_VERSION
        a = Analysis.model_validate(doc)
        a.summary = summarize(a)
        return a
    doc["schema_version"] = ANALYSIS_SCHEMA_VERSION  # 2 -> 3: every added field has a default
    return Analysis.model_validate(doc)


def load_analysis(path: str | Path) -> Analysis:
    """``path`` is a report.json, or a run directory (its report.json, else its records)."""
    path = Path(path)
    if path.is_dir() and not (path / REPORT_JSON).is_file():
        if not (path / "manifest.json").is_file():
            raise StoreError(f"{path}: neither a report.json nor a run directory (no manifest.json)")
        from harness.analysis.run import analyze_run

        return analyze_run(path)
    file = path / REPORT_JSON if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such report")
    try:
        doc = strict_json_loads(file.read_bytes())
    except ValueError as err:  # not JSON, or not one value (a duplicate key, NaN)
        raise StoreError(f"{file}: not a JSON report ({err})") from None
    if not isinstance(doc, dict):
        raise StoreError(f"{file}: not a JSON report (top level is not an object)")
    try:
        return upgrade_analysis(doc)
    except ValidationError as err:
        raise StoreError(f"{file}: not a report this harness wrote: {first_validation_problem(err)}") from None
    except ValueError as err:
        raise StoreError(f"{file}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
