"""Cross-node analysis of a fleet run: the ``node`` dimension and per-class verdicts.

Why a dimension of its own: on a fleet the same cell runs on several machines, and whether an
A100 and an H100 give the same bytes is a different question from whether one machine
repeats itself. So the repeat/process/batch/threads comparisons stay within one node, and the
``node`` dimension compares each node's reference execution of a spec with the reference
node's. Nodes are grouped into environment classes (GPU model, driver, CUDA, libraries; on
the CPU the processor and CPU count), so the report can say "ready on H100 and A100, tokens
across them" and estimate 3-node agreement for a network with the run's hardware mix
(harness.compare.agreement.simulate). A run with one node has no fleet and nothing changes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from harness.analysis.judgement import Judgement
from harness.analysis.model import ConfigNodes, DimensionSummary, Fleet, FleetNode, PairResult
from harness.compare.agreement import simulate
from harness.compare.levels import RULE_NAMES, worst_level
from harness.store.records import Record

Pair = Callable[[str, str, Record, Record], PairResult]
SAME_SPEC_DIMENSIONS = ("repeat", "process", "node")


def node_key(r: Record) -> str | None:
    return r.node.key if r.node else None


def _node_label(r: Record) -> str:
    """A record's node as the per-node levels name it ("unknown": a record that names no node)."""
    key = node_key(r)
    return key if key is not None else "unknown"


def _class(r: Record) -> str:
    return (r.node.env_class or r.node.key) if r.node else "unknown"


def _order(r: Record) -> tuple[int, int]:
    return (r.axes.worker, r.axes.repeat)


def fleet_of(records: list[Record]) -> Fleet | None:
    """The run's nodes when more than one ran something. The reference node is the one that
    ran the reference execution (worker 0 first) of the most specs: on Ray, worker 0's node."""
    ok = [r for r in records if r.status == "ok" and r.node]
    nodes = {r.node.key: r.node for r in ok if r.node is not None}
    if len(nodes) < 2:
        return None
    first: dict[str, Record] = {}
    for r in ok:
        if r.spec_hash not in first or _order(r) < _order(first[r.spec_hash]):
            first[r.spec_hash] = r
    held = Counter(node_key(r) for r in first.values())
    reference = min(nodes, key=lambda k: (-held.get(k, 0), k))
    executions = Counter(node_key(r) for r in ok)
    classes = Counter(n.env_class or n.key for n in nodes.values())
    return Fleet(
        reference_node=reference,
        nodes=[
            FleetNode(
                key=k,
                hostname=n.hostname,
                ray_node_id=n.ray_node_id,
                env_class=n.env_class,
                executions=executions[k],
                reference=k == reference,
            )
            for k, n in sorted(nodes.items())
        ],
        mix={c: n / len(nodes) for c, n in sorted(classes.items())},
    )


def node_pairs(
    pair: Pair, config_id: str, refs_by_node: dict[str | None, dict[str, Record]], reference: str | None
) -> list[PairResult]:
    """Each other node's reference execution of a spec against the reference node's. When the
    run's reference node did not run this configuration, the node that ran most of it stands in."""
    if len(refs_by_node) < 2:
        return []
    if reference not in refs_by_node:
        reference = min(refs_by_node, key=lambda k: (-len(refs_by_node[k]), str(k)))
    anchor = refs_by_node[reference]
    out = []
    for node in sorted((k for k in refs_by_node if k != reference), key=str):
        for spec, r in sorted(refs_by_node[node].items()):
            if spec in anchor:
                out.append(pair("node", config_id, anchor[spec], r))
    return out


def config_nodes(
    pair: Pair,
    config_id: str,
    ok: list[Record],
    pairs: dict[str, list[PairResult]],
    fleet: Fleet,
    judge: Callable[[dict[str, DimensionSummary]], Judgement],
    summarize: Callable[[list[PairResult]], DimensionSummary],
    verdict_dims: list[str],
) -> ConfigNodes | None:
    """Levels per node, a verdict per environment class, the worst level across classes and
    3-node agreement on the fleet's mix, for one configuration (None when one node ran it)."""
    if len({node_key(r) for r in ok}) < 2:
        return None
    by_cell = {r.cell_id: r for r in ok}
    levels: dict[str, str] = {}
    for p in pairs.get("node", []):
        key = _node_label(by_cell[p.b])
        # worst_level returns None only when given no level: never here
        levels[key] = worst_level([levels.get(key, "bitwise"), p.level]) or p.level
        levels.setdefault(_node_label(by_cell[p.a]), "reference")
    classes = sorted({_class(r) for r in ok})
    verdicts = {}
    for c in classes:
        inside = {
            d: summarize([p for p in ps if _class(by_cell[p.a]) == c == _class(by_cell[p.b])])
            for d, ps in pairs.items()
        }
        verdicts[c] = judge({d: s for d, s in inside.items() if s.pairs and d in verdict_dims})[0]
    across, outcomes = _across_classes(pair, config_id, ok, pairs, by_cell, fleet.reference_node)
    out = ConfigNodes(
        levels=dict(sorted(levels.items())),
        class_verdicts=verdicts,
        across_classes=across,
        summary=_summary(verdicts, across),
    )
    mix = {c: share for c, share in fleet.mix.items() if c in classes}
    if outcomes and len(mix) > 1:
        rules = set.intersection(*(set(d) for o in outcomes for d in o.values()))  # decided everywhere
        est = simulate(outcomes, mix, [r for r in RULE_NAMES if r in rules])
        out.consensus = {name: {"p3of3": r.p3of3, "p2of3": r.p2of3} for name, r in est.rules.items()}
        notes = [f"{len(outcomes)} spec(s) run on every class"]
        if len(mix) < len(fleet.mix):
            notes.append("only the classes that ran this configuration")
        if est.assumption:
            notes.append(est.assumption)
        out.consensus_note = "; ".join(notes)
    return out


def _across_classes(
    pair: Pair,
    config_id: str,
    ok: list[Record],
    pairs: dict[str, list[PairResult]],
    by_cell: dict[str, Record],
    reference: str,
) -> tuple[str | None, list[dict[tuple[str, str], dict[str, bool]]]]:
    """Per spec run on every class: the level between each two classes (their representative
    executions: the reference node's, else the first node's) and within each class (the worst
    same-spec pair inside it). Returns the worst level across classes and those outcomes."""
    reps: dict[str, dict[str, Record]] = defaultdict(dict)  # spec -> class -> representative
    for r in sorted(ok, key=lambda r: (node_key(r) != reference, str(node_key(r)), _order(r))):
        reps[r.spec_hash].setdefault(_class(r), r)
    within: dict[tuple[str, str], dict[str, bool]] = {}
    for d in SAME_SPEC_DIMENSIONS:
        for p in pairs.get(d, []):
            a, b = by_cell[p.a], by_cell[p.b]
            if a.spec_hash == b.spec_hash and _class(a) == _class(b):
                key = (a.spec_hash, _class(a))  # a rule agrees within a class when every pair there agrees
                within[key] = {rule: within.get(key, {}).get(rule, True) and ok for rule, ok in p.rules.items()}
    classes = sorted({_class(r) for r in ok})
    worst: list[str] = []
    outcomes = []
    for spec, by_class in sorted(reps.items()):
        if len(by_class) < len(classes):
            continue
        outcome: dict[tuple[str, str], dict[str, bool]] = {}
        for i, class_a in enumerate(classes):
            if (spec, class_a) in within:
                outcome[(class_a, class_a)] = within[(spec, class_a)]
            for class_b in classes[i + 1 :]:
                across_pair = pair("node", config_id, by_class[class_a], by_class[class_b])
                outcome[(class_a, class_b)] = dict(across_pair.rules)
                worst.append(across_pair.level)
        outcomes.append(outcome)
    return (worst_level(worst) if worst else None), outcomes


def _summary(verdicts: dict[str, str], across: str | None) -> str:
    """'ready on A and B; ready_with_tolerance on C; tokens across them'."""
    groups: dict[str, list[str]] = defaultdict(list)
    for c, v in verdicts.items():
        groups[v].append(c)
    parts = [f"{v} on {' and '.join(cs)}" for v, cs in groups.items()]
    if across and len(verdicts) > 1:
        parts.append(f"{across} across {'them' if len(verdicts) == 2 else 'classes'}")
    return "; ".join(parts)


def parallel_note(records: list[Record], sessions: list[dict[str, Any]]) -> str | None:
    """Whether costs were measured while other workers ran on the same node: executions whose
    [started_at, finished_at] overlapped another's on that node (clocks are compared only
    within one node)."""
    spans: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r.status == "ok" and r.started_at is not None and r.finished_at is not None:
            spans[node_key(r)].append((r.started_at, r.finished_at))
    overlapped = total = 0
    for items in spans.values():
        items.sort()
        total += len(items)
        latest_end = float("-inf")  # sorted by start: i overlaps another iff an earlier one ends
        for i, (start, end) in enumerate(items):  # after i starts, or the next starts before i ends
            nxt = items[i + 1][0] if i + 1 < len(items) else float("inf")
            overlapped += latest_end > start or nxt < end
            latest_end = max(latest_end, end)
    if not overlapped:
        return None
    how = ", ".join(
        sorted(
            {
                "ray executor"
                if s.get("executor") == "ray"
                else f"{s.get('executor', '?')} executor, parallel {s.get('parallel', '?')}"
                for s in sessions
            }
        )
    )
    return (
        f"costs measured under parallel execution: {overlapped} of {total} executions overlapped another worker "
        f"on the same node{f' ({how})' if how else ''}; latencies are perturbed, re-measure with parallel 1 "
        f"for cost figures"
    )
