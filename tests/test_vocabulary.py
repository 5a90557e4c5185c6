"""One spelling of each vocabulary (harness/vocabulary.py): levels, pair rules, the rules a matrix
may name, verdicts, certificate verdicts, the dimensions and their judged default.

A list of a whole vocabulary written out anywhere else (a tuple, list, set or ``Literal[...]``)
is the drift the vocabulary module exists to end: the summary once judged a shorter default set
of dimensions than the gates. Mappings keyed by every name (a colour, a short label per verdict)
are per-name presentation and stay where they are rendered; they must cover the vocabulary.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from harness import vocabulary as v

ROOT = Path(__file__).resolve().parent.parent / "harness"
VOCABULARIES = {
    "levels": v.LEVELS,
    "pair rules": v.RULE_NAMES,
    "rule strength": v.RULE_STRENGTH,
    "named rules": v.NAMED_RULES,
    "verdicts": v.VERDICTS,
    "certificate verdicts": v.CERTIFICATE_VERDICTS,
    "reproducibility dimensions": v.REPRO_DIMENSIONS,
    "judged dimensions": v.DEFAULT_JUDGED,
    "calibration sources": v.CALIBRATION_SOURCES,
}


def respelt(source: str, where: str, vocabularies: dict[str, tuple[str, ...]] = VOCABULARIES) -> list[str]:
    """Literal collections in ``source`` that hold every name of a vocabulary."""
    found = []
    tree = ast.parse(source)
    slices = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}  # Literal["a", "b"]'s tuple
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and id(node) not in slices:
            elts, what = node.elts, type(node).__name__.lower()
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).split(".")[-1] == "Literal":
            elts, what = (node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]), "Literal"
        else:
            continue
        values = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        found += [
            f"{where}:{node.lineno}: a {what} spells every {name}"
            for name, names in vocabularies.items()
            if set(names) <= values
        ]
    return found


def test_the_literal_types_are_the_vocabularies() -> None:
    assert set(get_args(v.Level)) == set(v.LEVELS)
    assert set(get_args(v.Verdict)) == set(v.VERDICTS)
    assert set(get_args(v.CertificateVerdict)) == set(v.CERTIFICATE_VERDICTS)
    assert get_args(v.NamedRule) == v.NAMED_RULES and set(v.NAMED_RULES) <= set(v.RULE_NAMES)
    assert set(v.DEFAULT_JUDGED) <= set(get_args(v.DimensionName)) <= set(v.DIMENSIONS)
    assert get_args(v.CalibrationSource) == v.CALIBRATION_SOURCES
    assert set(v.DIMENSIONS) <= set(v.CALIBRATION_SOURCES)
    assert set(v.RULE_STRENGTH) <= set(v.RULE_NAMES) and set(v.ACCEPTED) <= set(v.VERDICTS)
    assert set(v.CERTIFICATE_VERDICT.values()) <= set(v.CERTIFICATE_PASSED) <= set(v.CERTIFICATE_VERDICTS)


def test_no_module_spells_a_vocabulary_again() -> None:
    found = [
        p
        for f in sorted(ROOT.rglob("*.py"))
        if f.name != "vocabulary.py"
        for p in respelt(f.read_text(), str(f.relative_to(ROOT.parent)))
    ]
    assert found == [], "import these from harness.vocabulary:\n" + "\n".join(found)


def test_the_check_catches_a_respelt_list() -> None:
    planted = (
        'VERDICTS = ("ready", "ready_with_tolerance", "untested", "not_ready", "failed", "skipped")\n'
        'Rule = Literal["tokens", "tolerance", "perceptual", "composite", "replay"]\n'
        'SHORT = {"ready": "ok"}\nSOME = ("ready", "failed")\n'
    )
    assert respelt(planted, "m.py") == [
        "m.py:1: a tuple spells every verdicts",
        "m.py:2: a Literal spells every named rules",
    ]


def test_presentation_maps_cover_their_vocabulary() -> None:
    from harness.report.heatmap import PALETTE
    from harness.report.run import VERDICT_SHORT
    from harness.report.terminal import VERDICT_STYLE

    assert set(VERDICT_SHORT) == set(VERDICT_STYLE) == set(v.VERDICTS)
    assert set(v.LEVELS) <= set(PALETTE)
