"""Matrix include / exclude rules: which cells a rule names.

A rule is a conjunction over keys (``task`` and the axis names), each key allowing one value
or a list of values. Why an index: asking every rule about every cell is quadratic (a
0.96 MB matrix of 2,000 excludes over 20,000 cells took 145 s). ``RuleIndex`` turns the rules
into one bitset per (key, value): a cell is named by some rule when the AND of its keys'
bitsets is not zero, so a cell costs one AND per key whatever the number of rules.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any


def _options(want: Any, normalise: Callable[[Any], Any] | None) -> list[Any]:
    options = want if isinstance(want, list) else [want]
    return [normalise(o) for o in options] if normalise else options


def rule_matches(
    rule: Mapping[str, Any], values: Mapping[str, Any], normalise: Mapping[str, Callable[[Any], Any]] | None = None
) -> bool:
    """Whether one rule names the cell ``values`` (task name under ``task``)."""
    normalise = normalise or {}
    return all(values.get(key) in _options(want, normalise.get(key)) for key, want in rule.items())


class RuleIndex:
    """``any(rule_matches(r, values) for r in rules)`` in time linear in the keys."""

    def __init__(self, rules: Sequence[Mapping[str, Any]], normalise: Mapping[str, Callable[[Any], Any]] | None = None):
        normalise = normalise or {}
        self._full = (1 << len(rules)) - 1  # 0 when there are no rules: nothing matches
        keys = sorted({key for rule in rules for key in rule})
        # per key: the rules that do not mention it (they allow every value), and per value
        # the rules that list it
        self._free: dict[str, int] = dict.fromkeys(keys, 0)
        self._by_value: dict[str, dict[Hashable, int]] = {key: {} for key in keys}
        for bit, rule in enumerate(rules):
            for key in keys:
                if key not in rule:
                    self._free[key] |= 1 << bit
                    continue
                table = self._by_value[key]
                for option in _options(rule[key], normalise.get(key)):
                    try:
                        table[option] = table.get(option, 0) | (1 << bit)
                    except TypeError:  # an unhashable option (a table) equals no cell value
                        continue

    def matches(self, values: Mapping[str, Any]) -> bool:
        live = self._full
        if not live:
            return False
        for key, free in self._free.items():
            try:
                live &= free | self._by_value[key].get(values.get(key), 0)
            except TypeError:
                live &= free
            if not live:
                return False
        return True
