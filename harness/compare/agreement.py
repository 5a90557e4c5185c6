"""One model of 3-node agreement, and the network's scoring of a validation group.

The network (crynux-relay ``service/validate_task.go``, ``ValidateTaskGroup``): a validated task
runs on 3 nodes; the finished tasks are sorted by execution time (fastest first) and compared
pairwise with the task kind's rule (text: the sha256 of the result JSON file must be equal;
images: every 8-byte pHash block within the configured Hamming distance). With the three in
that order (0, 1, 2) and ``s01, s02, s12`` the pair decisions:
  - s01: 0 validated, 1 refunded; 2 refunded if s02 else **invalidated** (slashable);
  - else s02: 0 validated, 2 refunded, 1 **invalidated**;
  - else s12: 1 validated, 2 refunded, 0 **invalidated**;
  - none: the task is **aborted** (incorrect result), nobody is paid.
So the task is accepted when any pair agrees. With a non-transitive rule (s01 and s12 but not
s02) node 2 is invalidated although it agrees with node 1 -- the relay's order decides; we
average over the 6 orders, as execution time is independent of the output.

Here every node is honest, so each invalidation is an honest execution wrongly slashed. Two
inputs, one arithmetic:
  - ``group_figures``: executions of one spec (the pool of one network), a pair rule; every
    triple counted exactly by content class (or sampled, seeded, when contents are many);
  - ``simulate``: per task, rule decisions between environments (and within each), and a
    hardware mix; every ordered environment triple enumerated exactly.
Both give P(3-of-3), P(2-of-3) = P(task accepted), P(task aborted) and the expected share of
honest executions invalidated.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from harness.compare.levels import Comparable

#: rule name -> decision, between two environments of one task
Decisions = Mapping[str, bool]
Outcome = Mapping[tuple[str, str], Decisions]
_ORDERS = list(itertools.permutations(range(3)))


def relay_invalidated(s01: bool, s02: bool, s12: bool) -> tuple[int, ...]:
    """Which of the nodes (in execution order 0, 1, 2) the relay invalidates."""
    if s01:
        return () if s02 else (2,)
    if s02:
        return (1,)
    if s12:
        return (0,)
    return ()


def _triple(
    agree: Callable[[int, int], bool], x: int, y: int, z: int
) -> tuple[float, float, float, float, tuple[float, float, float]]:
    """(3-of-3, accepted, aborted, invalidated share, P(each node invalidated)) for one
    unordered group of three executions, averaged over the relay's 6 possible orders."""
    nodes = (x, y, z)
    ok = {(i, j): agree(nodes[i], nodes[j]) for i in range(3) for j in range(3) if i != j}
    s = ok[(0, 1)] + ok[(0, 2)] + ok[(1, 2)]
    per_node = [0.0, 0.0, 0.0]
    for order in _ORDERS:
        a, b, c = order
        for k in relay_invalidated(ok[(a, b)], ok[(a, c)], ok[(b, c)]):
            per_node[order[k]] += 1 / 6
    return float(s == 3), float(s > 0), float(s == 0), sum(per_node) / 3, (per_node[0], per_node[1], per_node[2])


class GroupFigures(BaseModel):
    """A 3-node validation group under one rule."""

    rule: str
    p3of3: float | None = None
    p2of3: float | None = None  # = P(task accepted): some pair agrees
    p_aborted: float | None = None
    invalidated: float | None = None  # expected share of the (honest) executions invalidated
    triples: int = 0
    pairs_agree: float | None = None


def _content_key(c: Comparable) -> tuple[Any, ...]:
    if not c.digests:
        return (id(c),)
    return (tuple(sorted(c.digests.items())), c.discrete, c.steps, c.sampling_rate)


def _sample_triples(n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(0, n, size=(count, 3))
    while True:
        bad = (out[:, 0] == out[:, 1]) | (out[:, 0] == out[:, 2]) | (out[:, 1] == out[:, 2])
        if not bad.any():
            return np.sort(out, axis=1)
        out[bad] = rng.integers(0, n, size=(int(bad.sum()), 3))


def group_figures(
    outputs: Sequence[Comparable],
    rule: Callable[[Comparable, Comparable], bool],
    *,
    name: str = "",
    max_triples: int = 20000,
    seed: int = 0,
) -> GroupFigures:
    """Every triple of these independent executions as a validation group under ``rule``.

    Outputs with the same digests are one content class; the rule runs once per pair of
    classes, triples are weighted by class multiplicities (O(k^3) in the k contents); with
    very many contents ``max_triples`` triples are sampled (seeded)."""
    keys: dict[tuple[Any, ...], int] = {}
    reps: list[Comparable] = []
    counts: list[int] = []
    cls: list[int] = []
    for o in outputs:
        key = _content_key(o)
        if key not in keys:
            keys[key] = len(reps)
            reps.append(o)
            counts.append(0)
        counts[keys[key]] += 1
        cls.append(keys[key])
    cache: dict[tuple[int, int], bool] = {}

    def agree(ci: int, cj: int) -> bool:
        if ci > cj:
            ci, cj = cj, ci
        if (ci, cj) not in cache:
            cache[(ci, cj)] = True if ci == cj else bool(rule(reps[ci], reps[cj]))
        return cache[(ci, cj)]

    n = len(outputs)
    if n < 3:
        return GroupFigures(rule=name, pairs_agree=float(agree(cls[0], cls[1])) if n == 2 else None)
    k = len(reps)
    sums = np.zeros(5)

    def add(w: float, i: int, j: int, m: int) -> None:
        p3, acc, abt, inv, _ = _triple(agree, i, j, m)
        sums[:] += w * np.array([p3, acc, abt, inv, (agree(i, j) + agree(i, m) + agree(j, m)) / 3])

    if k**3 <= 6 * max_triples or math.comb(n, 3) <= max_triples:
        for i in range(k):
            for j in range(i, k):
                for m in range(j, k):
                    if i == j == m:
                        w = math.comb(counts[i], 3)
                    elif i == j:
                        w = math.comb(counts[i], 2) * counts[m]
                    elif j == m:
                        w = counts[i] * math.comb(counts[j], 2)
                    else:
                        w = counts[i] * counts[j] * counts[m]
                    if w:
                        add(w, i, j, m)
        count = math.comb(n, 3)
    else:
        count = max_triples
        for i, j, m in _sample_triples(n, max_triples, seed).tolist():
            add(1, cls[i], cls[j], cls[m])
    p3, acc, abt, inv, pairs = (_round(x / count) for x in sums)
    return GroupFigures(
        rule=name, p3of3=p3, p2of3=acc, p_aborted=abt, invalidated=inv, triples=count, pairs_agree=pairs
    )


# --- hardware mixes -----------------------------------------------------------------------------------


class RuleEstimate(BaseModel):
    rule: str
    p3of3: float
    p2of3: float  # = P(task accepted)
    p_aborted: float
    wrongly_slashed: float  # expected share of the group's (honest) executions invalidated
    slashed_by_env: dict[str, float] = Field(default_factory=dict)  # P(a node of this env is invalidated)


class ConsensusEstimate(BaseModel):
    shares: dict[str, float]
    tasks: int
    assumed_within: int = 0  # (task, env) pairs whose within-env decision was not measured
    assumption: str | None = None
    rules: dict[str, RuleEstimate] = Field(default_factory=dict)


def _normalise(shares: Mapping[str, float]) -> dict[str, float]:
    clean = {str(k): float(v) for k, v in shares.items()}
    if not clean or any(v < 0 for v in clean.values()) or sum(clean.values()) <= 0:
        raise ValueError(f"hardware mix must be non-negative shares with a positive sum, got {dict(shares)}")
    total = sum(clean.values())
    return {k: v / total for k, v in clean.items() if v > 0}


def _decision(outcome: Outcome, a: str, b: str, rule: str, assume_within: bool) -> tuple[bool, bool]:
    """(agrees, assumed) for environments a, b under ``rule`` in one task's outcome."""
    for key in ((a, b), (b, a)):
        if key in outcome:
            decisions = outcome[key]
            if rule not in decisions:
                raise ValueError(f"no decision of rule {rule!r} between {a!r} and {b!r}")
            return bool(decisions[rule]), False
    if a == b and assume_within:
        return True, True
    raise ValueError(f"no observed outcome between environments {a!r} and {b!r}")


def simulate(
    outcomes: Sequence[Outcome], shares: Mapping[str, float], rules: Iterable[str], *, assume_within: bool = True
) -> ConsensusEstimate:
    """Exact validation-group figures for the hardware mix ``shares`` (nodes drawn
    independently; every node of one environment returns that environment's output).

    ``assume_within``: where a task has no within-environment decision (one execution per
    environment), two nodes of one environment agree; False makes a missing one an error."""
    mix = _normalise(shares)
    rules = list(rules)
    envs = sorted(mix)
    if not outcomes:
        raise ValueError("no outcomes to simulate from")
    totals = {r: {"p3": 0.0, "acc": 0.0, "abt": 0.0, "inv": 0.0, **{f"env:{e}": 0.0 for e in envs}} for r in rules}
    assumed = 0
    for outcome in outcomes:
        for rule in rules:
            ok: dict[tuple[str, str], bool] = {}
            for i, a in enumerate(envs):
                for b in envs[i:]:
                    ok[(a, b)], was = _decision(outcome, a, b, rule, assume_within)
                    ok[(b, a)] = ok[(a, b)]
                    assumed += was and rule == rules[0]
            t = totals[rule]
            for x, y, z in itertools.product(envs, repeat=3):
                p = mix[x] * mix[y] * mix[z]
                names = (x, y, z)
                # the lambda is called within this iteration only
                p3, acc, abt, inv, per_node = _triple(lambda i, j: ok[(names[i], names[j])], 0, 1, 2)  # noqa: B023
                t["p3"] += p * p3
                t["acc"] += p * acc
                t["abt"] += p * abt
                t["inv"] += p * inv
                t[f"env:{x}"] += mix[y] * mix[z] * per_node[0]
    n = len(outcomes)
    est = ConsensusEstimate(
        shares=mix,
        tasks=n,
        assumed_within=assumed,
        assumption="two nodes of one environment assumed to agree where not measured" if assumed else None,
    )
    for rule in rules:
        t = totals[rule]
        est.rules[rule] = RuleEstimate(
            rule=rule,
            p3of3=_round(t["p3"] / n),
            p2of3=_round(t["acc"] / n),
            p_aborted=_round(t["abt"] / n),
            wrongly_slashed=_round(t["inv"] / n),
            slashed_by_env={e: _round(t[f"env:{e}"] / n) for e in envs},
        )
    return est


def _round(x: float) -> float:
    """Exact arithmetic leaves 0.9999999999999998-style noise; 12 digits is plenty."""
    return round(float(x), 12)


def uniform_outcomes(
    decisions: Iterable[tuple[tuple[str, str], Decisions]], tasks: int = 1
) -> list[dict[tuple[str, str], Any]]:
    """``tasks`` copies of one outcome (for what-if questions and tests)."""
    one = {k: dict(v) for k, v in decisions}
    return [dict(one) for _ in range(tasks)]
