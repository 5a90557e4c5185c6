"""The exclude index says exactly what asking every rule says, and stays linear."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.spec.matrix import _none_bits
from harness.spec.rules import RuleIndex, rule_matches

KEYS = {
    "task": st.sampled_from(["gpt", "mg", "x"]),
    "seed": st.integers(0, 3),
    "threads": st.sampled_from([None, 1, 2]),
    "quantize_bits": st.sampled_from([None, 0, "none", 4, 8]),
    "dtype": st.sampled_from(["float32", "bfloat16"]),
}
NORMALISE = {"quantize_bits": _none_bits}


@st.composite
def rules(draw):
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), unique=True, max_size=len(KEYS)))
    return {k: draw(st.one_of(KEYS[k], st.lists(KEYS[k], max_size=3))) for k in keys}


@st.composite
def cells(draw):
    values = {k: draw(strategy) for k, strategy in KEYS.items()}
    values["quantize_bits"] = _none_bits(values["quantize_bits"])  # expansion normalises the cell's own value
    return values


@settings(max_examples=400, deadline=None)
@given(st.lists(rules(), max_size=12), st.lists(cells(), min_size=1, max_size=20))
def test_the_index_agrees_with_asking_every_rule(some_rules, some_cells):
    index = RuleIndex(some_rules, NORMALISE)
    for cell in some_cells:
        assert index.matches(cell) == any(rule_matches(r, cell, NORMALISE) for r in some_rules)


def test_edge_rules():
    cell = {"task": "gpt", "seed": 1, "quantize_bits": None}
    assert not RuleIndex([]).matches(cell)
    assert RuleIndex([{}]).matches(cell)  # a rule with no keys names every cell
    assert RuleIndex([{"quantize_bits": "none"}], NORMALISE).matches(cell)
    assert not RuleIndex([{"seed": []}]).matches(cell)  # an empty list allows no value
    assert not RuleIndex([{"task": {"a": 1}}]).matches(cell)  # a table is no task name (and no crash)
    assert RuleIndex([{"task": [{"a": 1}, "gpt"]}]).matches(cell)
    assert RuleIndex([{"seed": True}]).matches(cell) == rule_matches({"seed": True}, cell)  # 1 == True, as before


def test_two_thousand_excludes_over_twenty_thousand_cells_are_one_pass():
    """The red team's quadratic case, at the matrix bounds: 2,000 rules x 20,000 cells.
    The naive check asks 40 million questions; the index asks one AND per key per cell."""
    excludes = [{"seed": 100_000 + i, "threads": [1, 2]} for i in range(2_000)]
    index = RuleIndex(excludes)
    hits = sum(index.matches({"seed": s, "threads": 1}) for s in range(20_000))
    assert hits == 0
    assert index.matches({"seed": 100_999, "threads": 2}) and not index.matches({"seed": 100_999, "threads": None})
