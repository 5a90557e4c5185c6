"""The verdict map: configurations x dimensions, each cell the worst comparison level seen.

Built generically from the analysis data: the columns are every dimension any
configuration carries (known ones in a fixed order, unknown ones appended alphabetically,
so a new dimension such as ``node`` or ``load`` appears without a change here), then seed
sensitivity and dtype drift. Shared by the Markdown, HTML and terminal renderers.

Cell levels (the colour key): bitwise, tokens, tolerance, perceptual, divergent (the
comparison levels, strongest first), failed (the configuration's cells failed) and untested
(no pair to compare, or only pairs of one kernel class: "untested (same kernels)"). The
seed column is read the other way round -- different seeds *should* differ -- so
"sensitive" is drawn as the good end (bitwise colour) and "no effect" as the bad end
(divergent colour); its label says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis.model import Analysis, ConfigResult, DimensionSummary
from harness.analysis.summary import ordered_dimensions
from harness.vocabulary import MAP_MEANING

EXTRA_COLUMNS = ("seed", "dtype")  # seed sensitivity, dtype drift
#: the mark on a cell whose pairs decided its configuration's not_ready verdict
DECIDES = "(decides)"
#: the short word on a cell whose only pairs were set aside as no comparison (vocabulary.SAME_KERNELS)
SAME_KERNELS_LABEL = "same kernels"


@dataclass(frozen=True)
class MapCell:
    config_id: str
    dimension: str
    level: str  # one of MAP_LEVELS
    label: str  # what the cell says (the level, or "sensitive" / "no effect" / "reference")
    title: str  # counts, for the hover text


def map_columns(a: Analysis) -> list[str]:
    seen: set[str] = set()
    for c in a.configs:
        seen.update(c.dimensions)
    return ordered_dimensions(seen - set(EXTRA_COLUMNS)) + list(EXTRA_COLUMNS)


def _counts(s: DimensionSummary) -> str:
    levels = ", ".join(f"{k} {v}" for k, v in s.levels.items())
    aside = f"; {s.not_compared} pair(s) not compared ({s.not_compared_reason})" if s.not_compared else ""
    return (f"{s.pairs} pair(s): {levels}" if levels else f"{s.pairs} pair(s)") + aside


def _dimension_cell(c: ConfigResult, dim: str) -> MapCell:
    s = c.dimensions.get(dim)
    if s and s.pairs and s.worst:
        if dim in c.decided_by:  # the pairs that decided a not_ready verdict: marked, and why
            return MapCell(
                c.config_id,
                dim,
                s.worst,
                f"{s.worst} {DECIDES}",
                f"{dim}: {_counts(s)}; decides the verdict: {c.reason}",
            )
        return MapCell(c.config_id, dim, s.worst, s.worst, f"{dim}: {_counts(s)}")
    if c.verdict == "failed":
        return MapCell(c.config_id, dim, "failed", "failed", f"{dim}: {MAP_MEANING['failed']}, nothing compared")
    if s and s.not_compared:  # e.g. an isa level that runs native's own kernels here
        return MapCell(c.config_id, dim, "untested", f"untested ({SAME_KERNELS_LABEL})", f"{dim}: {_counts(s)}")
    label = "skipped" if c.verdict == "skipped" else "untested"
    return MapCell(c.config_id, dim, "untested", label, f"{dim}: no pair compared ({label})")


def _seed_cell(c: ConfigResult) -> MapCell:
    note = f" ({c.seed_note})" if c.seed_note else ""
    if c.seed_sensitive is True:
        return MapCell(
            c.config_id, "seed", "bitwise", "sensitive", f"seed: different seeds give different outputs{note}"
        )
    if c.seed_sensitive is False:
        return MapCell(c.config_id, "seed", "divergent", "no effect", f"seed: the seed has no effect{note}")
    return MapCell(c.config_id, "seed", "untested", "untested", "seed: one seed only, nothing compared")


def _drift_cell(c: ConfigResult) -> MapCell:
    d = c.dtype_drift
    if d and d.pairs and d.worst:
        return MapCell(c.config_id, "dtype", d.worst, d.worst, f"dtype drift vs float32: {_counts(d)}")
    if c.dtype == "float32" and not c.quantize_bits:
        return MapCell(c.config_id, "dtype", "untested", "reference", "dtype: this is the float32 reference")
    return MapCell(c.config_id, "dtype", "untested", "untested", "dtype: no float32 reference to compare with")


def config_cells(c: ConfigResult, columns: list[str]) -> list[MapCell]:
    out = []
    for dim in columns:
        if dim == "seed":
            out.append(_seed_cell(c))
        elif dim == "dtype":
            out.append(_drift_cell(c))
        else:
            out.append(_dimension_cell(c, dim))
    return out


def verdict_map(a: Analysis) -> tuple[list[str], list[tuple[ConfigResult, list[MapCell]]]]:
    """(columns, one row of cells per configuration, in the analysis' order)."""
    columns = map_columns(a)
    return columns, [(c, config_cells(c, columns)) for c in a.configs]


def map_table(a: Analysis) -> tuple[list[str], list[list[str]]]:
    """The map as a plain table (Markdown): the level written in each cell."""
    columns, rows = verdict_map(a)
    return ["Config", "Verdict", *columns], [
        [c.config_id, c.verdict, *(cell.label for cell in cells)] for c, cells in rows
    ]
