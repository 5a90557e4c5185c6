"""One spelling of each vocabulary (harness/vocabulary.py): levels, pair rules, the rules a matrix
may name, verdicts, certificate verdicts, the dimensions and their judged default, record
statuses and the failed ones, matrix axes and the configuration's, the library lists; and one
wording of each meaning (a level's, a verdict's, what a level differed in, a dimension's phrase).

A list of a whole vocabulary written out anywhere else (a tuple, list, set, ``Literal[...]`` or
the keys of a dict) is the drift the vocabulary module exists to end: the summary once judged a
shorter default set of dimensions than the gates, and "bitwise" was explained three ways in three
renderers. A mapping keyed by every name (a colour, a short label per verdict) lives beside the
vocabulary, so every renderer reads the same one; so does the text that explains a name.
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
    "record statuses": v.STATUSES,
    "failed statuses": v.FAILED_STATUSES,
    "matrix axes": v.AXIS_NAMES,
    "configuration axes": v.CONFIG_AXES,
    "calibration sources": v.CALIBRATION_SOURCES,
}
#: lists that live in their own module (one each), checked like the vocabularies: name -> (home, names)
HOMED = {
    "environment-class libraries": (
        "execution/env.py",
        ("torch", "transformers", "tokenizers", "accelerate", "bitsandbytes", "diffusers", "numpy"),
    ),
}
#: dicts keyed by every name that may stay where they are, with the reason
ALLOWED = {
    "harness/compare/validators.py": "RULES: the rule functions by name, asserted equal to RULE_NAMES at import",
}
#: the texts that say what a name means: each written once, in harness/vocabulary.py
MEANINGS = sorted(
    {
        *v.MAP_MEANING.values(),
        *(text.split("{")[0].rstrip() for text in v.LEVEL_DIFFERED.values()),
        *v.VERDICT_TEXT.values(),
        *(short for name, short in v.VERDICT_SHORT.items() if short != name),
        *(d.phrase for d in v.DIMENSIONS.values()),
    }
    - set(v.VERDICTS)  # a text that is its name ("skipped") is the name, not a second wording
)


def respelt(source: str, where: str, vocabularies: dict[str, tuple[str, ...]] = VOCABULARIES) -> list[str]:
    """Literal collections (and dicts' keys) in ``source`` that hold every name of a vocabulary."""
    found = []
    tree = ast.parse(source)
    slices = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}  # Literal["a", "b"]'s tuple
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and id(node) not in slices:
            elts, what = node.elts, type(node).__name__.lower()
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).split(".")[-1] == "Literal":
            elts, what = (node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]), "Literal"
        elif isinstance(node, ast.Dict):
            elts, what = [k for k in node.keys if k is not None], "dict's keys"
        else:
            continue
        values = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        found += [
            f"{where}:{node.lineno}: a {what} spells every {name}"
            for name, names in vocabularies.items()
            if set(names) <= values
        ]
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of docstring constants (prose about a name, not a spelling the code renders)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def meanings_respelt(source: str, where: str, meanings: list[str] = MEANINGS) -> list[str]:
    """String constants (docstrings aside) that write a meaning out again instead of reading it
    from harness.vocabulary."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        f"{where}:{node.lineno}: spells the meaning {text!r} again"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        for text in meanings
        if text in node.value
    ]


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
        if f.name != "vocabulary.py" and str(f.relative_to(ROOT.parent)) not in ALLOWED
        for p in respelt(f.read_text(), str(f.relative_to(ROOT.parent)))
    ]
    for name, (home, names) in HOMED.items():
        found += [
            p
            for f in sorted(ROOT.rglob("*.py"))
            if f.relative_to(ROOT).as_posix() != home
            for p in respelt(f.read_text(), str(f.relative_to(ROOT.parent)), {name: names})
        ]
        found += (
            [f"{home}: no longer holds the {name}"]
            if not respelt((ROOT / home).read_text(), home, {name: names})
            else []
        )
    assert found == [], "import these from harness.vocabulary (or their one home):\n" + "\n".join(found)


def test_no_module_spells_a_meaning_again() -> None:
    found = [
        p
        for f in sorted(ROOT.rglob("*.py"))
        if f.name != "vocabulary.py"
        for p in meanings_respelt(f.read_text(), str(f.relative_to(ROOT.parent)))
    ]
    assert found == [], "read these texts from harness.vocabulary:\n" + "\n".join(found)


def test_the_check_catches_a_respelt_list() -> None:
    planted = (
        'VERDICTS = ("ready", "ready_with_tolerance", "untested", "not_ready", "failed", "skipped")\n'
        'Rule = Literal["tokens", "tolerance", "perceptual", "composite", "replay"]\n'
        'SHORT = {"ready": "ok"}\nSOME = ("ready", "failed")\n'
        'COLOUR = {"bitwise": 1, "tokens": 2, "tolerance": 3, "perceptual": 4, "divergent": 5}\n'
        'BAD = r.status in ("failed", "timeout")\n'
    )
    assert respelt(planted, "m.py") == [
        "m.py:1: a tuple spells every verdicts",
        "m.py:2: a Literal spells every named rules",
        "m.py:5: a dict's keys spells every levels",
        "m.py:6: a tuple spells every failed statuses",
    ]


def test_the_check_catches_a_second_spelling_of_a_meaning() -> None:
    planted = (
        '"""A docstring may say identical bytes."""\n'
        'LEGEND = {"bitwise": "identical bytes"}\n'
        'line = f"{dim}: outputs diverge when {phrase}"\n'
        'fine = "bitwise"\n'
    )
    assert meanings_respelt(planted, "m.py") == [
        "m.py:2: spells the meaning 'identical bytes' again",
        "m.py:3: spells the meaning 'outputs diverge' again",
    ]


def test_presentation_maps_cover_their_vocabulary() -> None:
    assert set(v.VERDICT_SHORT) == set(v.VERDICT_STYLE) == set(v.VERDICT_TEXT) == set(v.VERDICTS)
    assert set(v.LEVEL_MEANING) == set(v.LEVELS) and set(v.LEVEL_DIFFERED) == set(v.LEVELS) - {"bitwise"}
    assert set(v.MAP_MEANING) == set(v.LEVEL_COLOUR) == set(v.MAP_LEVELS) and set(v.DARK_TEXT) <= set(v.MAP_LEVELS)
    assert set(v.FAILED_STATUSES) <= set(v.STATUSES) and set(get_args(v.Status)) == set(v.STATUSES)
    assert set(v.CONFIG_AXES) <= set(v.AXIS_NAMES)
    assert {d.axis for d in v.DIMENSIONS.values() if d.axis} <= set(v.AXIS_NAMES) - set(v.CONFIG_AXES)
