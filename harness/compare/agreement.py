"""Consensus simulation: how often a 3-node validation group agrees on a mixed network.

Input: per task (one spec), the comparison level observed between every pair of
environments, ``(env_a, env_b) -> level``, and within each environment, ``(env, env) ->
level`` (two nodes on the same hardware: repeat/process agreement). A validation rule at
level L accepts a pair whose level is L or stronger (the nesting the analysis uses: a
tokens-level pair counts as agreeing under the tolerance and fingerprint rules too).

Model: nodes are drawn independently from the hardware mix ``shares`` (env -> share); every
node of one environment returns that environment's output; tasks are equally likely. We
enumerate every ordered environment triple exactly (|envs|^3 terms per task), so results
are exact for the observed outcomes -- no Monte Carlo noise.

Per triple, with s = the number of agreeing pairs among the three:
  - 3-of-3 agreement when s = 3; 2-of-3 (the network's majority) when s >= 1;
  - honest nodes wrongly slashed (every node here is honest): a node that agrees with
    nobody (s = 1: the odd one out; s = 0: no majority, all three); with s = 2 (possible
    under non-transitive tolerance rules) every node agrees with someone: nobody.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, Field

from harness.compare.levels import level_rank

#: validation rule name -> the weakest comparison level it accepts
RULES: dict[str, str] = {"exact_hash": "bitwise", "token_equality": "tokens", "tolerance": "tolerance",
                         "fingerprint": "perceptual"}
Outcome = Mapping[tuple[str, str], str]


class RuleEstimate(BaseModel):
    rule: str
    level: str
    p3of3: float
    p2of3: float
    wrongly_slashed: float  # expected fraction of the group's (honest) nodes slashed
    slashed_by_env: dict[str, float] = Field(default_factory=dict)  # P(a node of this env is slashed)


class ConsensusEstimate(BaseModel):
    shares: dict[str, float]
    tasks: int
    assumed_within: int = 0  # (task, env) pairs whose within-env level was not measured
    assumption: str | None = None
    rules: dict[str, RuleEstimate] = Field(default_factory=dict)


def _normalise(shares: Mapping[str, float]) -> dict[str, float]:
    clean = {str(k): float(v) for k, v in shares.items()}
    if not clean or any(v < 0 for v in clean.values()) or sum(clean.values()) <= 0:
        raise ValueError(f"hardware mix must be non-negative shares with a positive sum, got {dict(shares)}")
    total = sum(clean.values())
    return {k: v / total for k, v in clean.items() if v > 0}


def _level(outcome: Outcome, a: str, b: str, assume_within: str | None) -> tuple[str, bool]:
    """(level, assumed) for the pair a-b in one task's outcome."""
    for key in ((a, b), (b, a)):
        if key in outcome:
            level = outcome[key]
            level_rank(level)  # validates the name
            return level, False
    if a == b and assume_within is not None:
        return assume_within, True
    raise ValueError(f"no observed outcome between environments {a!r} and {b!r}")


def simulate(outcomes: Sequence[Outcome], shares: Mapping[str, float], *,
             assume_within: str | None = "bitwise", rules: Mapping[str, str] | None = None) -> ConsensusEstimate:
    """Exact 3-node agreement and slashing estimates for the hardware mix ``shares``.

    ``assume_within``: level used where a task has no within-environment outcome (one
    execution per environment); None makes a missing one an error."""
    mix = _normalise(shares)
    rules = dict(rules or RULES)
    envs = sorted(mix)
    if not outcomes:
        raise ValueError("no outcomes to simulate from")
    if assume_within is not None:
        level_rank(assume_within)
    totals = {name: {"p3": 0.0, "p2": 0.0, "slashed": 0.0, **{f"env:{e}": 0.0 for e in envs}} for name in rules}
    assumed = 0
    for outcome in outcomes:
        levels: dict[tuple[str, str], str] = {}
        for i, a in enumerate(envs):
            for b in envs[i:]:
                levels[(a, b)], was_assumed = _level(outcome, a, b, assume_within)
                levels[(b, a)] = levels[(a, b)]
                assumed += was_assumed
        for name, rule_level in rules.items():
            rank = level_rank(rule_level)
            ok = {pair: level_rank(lv) <= rank for pair, lv in levels.items()}
            t = totals[name]
            for x in envs:
                for y in envs:
                    for z in envs:
                        p = mix[x] * mix[y] * mix[z]
                        xy, xz, yz = ok[(x, y)], ok[(x, z)], ok[(y, z)]
                        s = xy + xz + yz
                        t["p3"] += p * (s == 3)
                        t["p2"] += p * (s >= 1)
                        lonely = [not (xy or xz), not (xy or yz), not (xz or yz)]
                        t["slashed"] += p * sum(lonely) / 3
                        # the first node's fate, by its environment: P(slashed | env x)
                        t[f"env:{x}"] += mix[y] * mix[z] * lonely[0]
    n = len(outcomes)
    est = ConsensusEstimate(shares=mix, tasks=n, assumed_within=assumed,
                            assumption=f"within-environment level assumed {assume_within!r} where not measured"
                            if assumed else None)
    for name, rule_level in rules.items():
        t = totals[name]
        est.rules[name] = RuleEstimate(rule=name, level=rule_level, p3of3=_round(t["p3"] / n), p2of3=_round(t["p2"] / n),
                                       wrongly_slashed=_round(t["slashed"] / n),
                                       slashed_by_env={e: _round(t[f"env:{e}"] / n) for e in envs})
    return est


def _round(x: float) -> float:
    """Exact arithmetic leaves 0.9999999999999998-style noise; 12 digits is plenty."""
    return round(x, 12)


def uniform_outcomes(levels: Iterable[tuple[tuple[str, str], str]], tasks: int = 1) -> list[dict[tuple[str, str], str]]:
    """``tasks`` copies of one outcome (for what-if questions and tests)."""
    one = dict(levels)
    return [dict(one) for _ in range(tasks)]
