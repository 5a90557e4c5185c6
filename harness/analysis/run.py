"""Turn a run's records into verdicts with evidence, agreement estimates, costs and gates.

Comparisons are made where outputs *should* agree: repeats in one worker, worker processes,
batch sizes, thread counts and load orders (cold start vs served from a loaded model; each
against the configuration's reference execution: batch 1, the first thread count, warm), plus
two informational ones: seed sensitivity (different seeds should differ) and dtype drift
(how far a cheaper dtype or quantization lands from float32). Digests settle most pairs;
artifacts are read only when digests differ. Gates are decided here, rendering decides nothing.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from harness.analysis.bench import Stats, real_time_factor, summarize, tokens_per_second
from harness.analysis.judgement import judge, judge_configuration, summarize_pairs
from harness.analysis.model import (
    Analysis,
    ConfigResult,
    CostSummary,
    DimensionSummary,
    GateResult,
    ModelRow,
    NetworkFigures,
    PairResult,
)
from harness.analysis.nodes import config_nodes, fleet_of, node_key, node_pairs, parallel_note
from harness.compare.levels import (
    Comparable,
    NamedValidator,
    Thresholds,
    compare,
    level_rank,
)
from harness.digests import digest_json
from harness.execution.env import library_changes
from harness.isa import NATIVE, RELATIVE_LEVELS
from harness.spec.calibration import Facts, new_tokens_asked
from harness.spec.kinds import KINDS, load_object
from harness.spec.policy import ConfigPolicy, config_policy, margin_source
from harness.store.records import Record
from harness.store.run import RunStore, StoreError
from harness.vocabulary import (
    AXIS_DIMENSIONS,
    CURRENT_STACK,
    DIMENSIONS,
    FAILED_STATUSES,
    NODE,
    REPRO_DIMENSIONS,
    SAME_KERNELS,
    VERDICTS,
)

if TYPE_CHECKING:
    from harness.compare.replay import ReplayDecision, Side
    from harness.compare.validators import Validator
    from harness.store.manifest import Manifest

VERDICT_ORDER = VERDICTS
#: a record's axes without some of them, as sorted (name, value) items: what groups its comparisons
AxesKey = tuple[tuple[str, Any], ...]
#: a pair rule's figures over a configuration's 3-node groups (harness.compare.agreement.GroupFigures)
Figures = dict[str, float | int | None]


class LazyArtifact(Mapping[str, npt.NDArray[Any]]):
    """Arrays of a record's artifact, read (and checked against its digests) on first use."""

    def __init__(self, store: RunStore, record: Record) -> None:
        self.store, self.record = store, record
        self._arrays: dict[str, npt.NDArray[Any]] | None = None

    def _load(self) -> dict[str, npt.NDArray[Any]]:
        if self._arrays is None:
            if self.record.artifact is None:  # digests but no artifact to check them against: a damaged record
                raise StoreError(f"{self.record.cell_id}: the record names no artifact")
            self._arrays = self.store.load_artifact(self.record.artifact, self.record.digests)
        return self._arrays

    def __getitem__(self, key: str) -> npt.NDArray[Any]:
        arrays = self._load()
        if key not in arrays:  # the record names an array its artifact lacks: a damaged artifact
            raise StoreError(f"{self.record.artifact}: array {key!r} is missing from the artifact")
        return arrays[key]

    def __contains__(self, key: object) -> bool:
        return key in self.record.digests and key not in ("output", "tokens", "response")

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def comparable(store: RunStore, r: Record) -> Comparable:
    spec = KINDS.get(r.kind) if r.kind in KINDS else None  # a kind this harness lacks: no tokens level
    discrete = spec.discrete if spec and spec.discrete in r.digests else None
    steps = discrete or next((name for name in (spec.steps if spec else ("latents",)) if name in r.digests), None)
    digests = r.digests
    upstream = spec.upstream_discrete if spec else None
    if discrete and upstream and upstream in digests:
        # a chain's discrete output is both stages' tokens: equal codes after different text
        # tokens are not "the same tokens"
        digests = {**digests, "tokens": digest_json([digests[upstream], digests[discrete]])}
    return Comparable(
        arrays=LazyArtifact(store, r),
        digests=digests,
        discrete=discrete,
        steps=steps,
        sampling_rate=r.output.get("sampling_rate"),
    )


def latest_records(records: list[Record]) -> list[Record]:
    """One record per cell: the last written (a resumed cell's final attempt)."""
    latest: dict[str, Record] = {}
    for r in records:
        latest[r.cell_id] = r
    return list(latest.values())


class ComparableCache:
    """One Comparable (and so one artifact read) per record of a run; with ``replay``, each
    carries its replay decision (computed on first use). ``use`` sets the configuration being
    compared: its thresholds, and whether its composite bounds were measured for it."""

    #: False for a configuration outside its calibration's scope: no finding from bounds never measured for it
    bounds_measured = True

    def use(self, cp: ConfigPolicy) -> None:
        self.thresholds, self.bounds_measured = cp.thresholds, cp.out_of_scope is None

    def __init__(self, store: RunStore, thresholds: Thresholds, replay: RunReplay | None = None):
        self.store, self.thresholds, self.replay = store, thresholds, replay
        self._cache: dict[str, Comparable] = {}

    def get(self, r: Record) -> Comparable:
        if r.cell_id not in self._cache:
            c = comparable(self.store, r)
            if self.replay is not None and self.replay.covers(r):
                # decided under the thresholds in force when first asked: its configuration's
                c.replayed = lambda r=r, c=c: self.replay.decision(r, c, self.thresholds)
            self._cache[r.cell_id] = c
        return self._cache[r.cell_id]


class RunReplay:
    """The replay rule over a run's records: each distinct (task, output) replayed once on this
    machine, and the first divergent step of a pair explained from both sides' distributions.
    Only for the kinds whose matrix validator is ``replay``."""

    #: dimensions whose two sides this machine can re-run as they ran (and that draw alike)
    EXPLAINED = ("repeat", "process", "threads", "isa")

    def __init__(self, manifest: Manifest, kinds: set[str]) -> None:
        from harness.compare.replay import Replayer

        self.kinds = kinds
        self.replayer = Replayer()
        tasks = manifest.matrix.get("tasks") if isinstance(manifest.matrix, dict) else None
        self.base = {
            name: entry["task"]
            for name, entry in (tasks or {}).items()
            if isinstance(entry, dict) and isinstance(entry.get("task"), dict)
        }
        self._explained: dict[tuple[str, str], dict[str, Any] | None] = {}

    def covers(self, r: Record) -> bool:
        return r.kind in self.kinds and r.task_name in self.base

    @staticmethod
    def thresholds_for(thresholds: Thresholds, r: Record) -> Thresholds:
        """The thresholds with this dtype's calibrated decoder bounds (replay's, so that the
        codes-equal finding and the replay rule judge a waveform by the same bounds)."""
        from harness.compare.replay import bounds_for

        b = bounds_for(thresholds, r.axes.dtype)
        return thresholds.model_copy(
            update={"waveform_max_abs": b.waveform_max_abs, "waveform_rel_l2": b.waveform_rel_l2}
        )

    def task_doc(self, r: Record) -> dict[str, Any]:
        from harness.spec.matrix import apply_axes

        return apply_axes(r.kind, self.base[r.task_name], r.axes.model_dump())

    def decision(self, r: Record, c: Comparable, thresholds: Thresholds) -> ReplayDecision:
        from harness.execution.replay import Candidate

        doc = self.task_doc(r)
        key = (
            digest_json(doc),
            r.digests.get("output"),
            r.digests.get("tokens"),
            r.axes.batch_size,
            r.axes.device,
            digest_json(thresholds.model_dump(mode="json")),
        )
        return self.replayer.decision(
            key,
            r.kind,
            doc,
            lambda: Candidate(arrays=c.arrays, response=r.output.get("response")),
            ran_on=r.axes.device,
            batch_size=r.axes.batch_size,
            thresholds=thresholds,
        )

    def explain(
        self, dimension: str, a: Record, b: Record, ca: Comparable, cb: Comparable, thresholds: Thresholds
    ) -> dict[str, Any] | None:
        from harness.compare.replay import bounds_for, explain_divergence

        if (
            dimension not in self.EXPLAINED
            or not (self.covers(a) and self.covers(b))
            or a.axes.batch_size != b.axes.batch_size
            or a.axes.load != b.axes.load
        ):
            return None
        key = (a.cell_id, b.cell_id)
        if key not in self._explained:
            sides = [replay_side(r, self.task_doc(r), c.arrays) for r, c in ((a, ca), (b, cb))]
            margin = bounds_for(thresholds, a.axes.dtype).margin
            try:
                e = explain_divergence(a.kind, sides[0], sides[1], margin, cache=self.replayer.cache)
            except (RuntimeError, OSError) as err:  # a worker at another kernel level failed: say so, decide nothing
                e, self._explained[key] = None, {"cls": None, "sentence": f"not explained: {err}"}
            if key not in self._explained:
                self._explained[key] = e.model_dump() if e is not None else None
        return self._explained[key]

    def config_summary(self, comparables: list[Comparable], margin_from: str = "") -> dict[str, Any]:
        decisions = [c.replayed() for c in comparables if c.replayed is not None]
        rejected = [d for d in decisions if d.accepted is False]
        unreplayable = [d for d in decisions if d.accepted is None]
        return {
            "replayed": len(decisions),
            "accepted": sum(d.accepted is True for d in decisions),
            "rejected": len(rejected),
            "not_replayable": len(unreplayable),
            "first_rejection": rejected[0].reason if rejected else None,
            "not_replayable_reason": unreplayable[0].reason if unreplayable else None,
            "largest_gap": max((d.max_gap for d in decisions if d.accepted and d.max_gap is not None), default=None),
            "flips": sum(d.flips for d in decisions if d.accepted),
            "positions": sum(d.positions for d in decisions),
            "margin": max((d.margin for d in decisions if d.margin is not None), default=None),
            "margin_from": margin_from,
        }


class _Comparer(ComparableCache):
    def pair(self, dimension: str, config_id: str, a: Record, b: Record) -> PairResult:
        try:
            ca, cb = self.get(a), self.get(b)
            thr = (
                self.replay.thresholds_for(self.thresholds, a)
                if self.replay is not None and self.replay.covers(a)
                else self.thresholds
            )
            c = compare(ca, cb, thr, bounds_measured=self.bounds_measured)
            rules = pair_rules(ca, cb, thr, bitwise=c.level == "bitwise")
            if self.replay is not None and c.level not in ("bitwise", "tokens"):
                c.explanation = self.replay.explain(dimension, a, b, ca, cb, self.thresholds)
        except StoreError as err:  # a corrupted artifact is reported, never a crash; a bug still surfaces
            raise _ArtifactProblem(f"{a.cell_id} vs {b.cell_id}: {err}") from None
        stage = None
        attribute = KINDS.get(a.kind).attribute_stage if a.kind in KINDS else None
        if attribute and c.level != "bitwise":  # a multi-stage kind: which stage began it
            stage = load_object(attribute)(a.digests, b.digests)
        return PairResult(
            dimension=dimension,
            config_id=config_id,
            a=a.cell_id,
            b=b.cell_id,
            level=c.level,
            metrics=c.metrics,
            first_divergence=c.first_divergence,
            steps_total=c.steps_total,
            a_artifact=a.artifact,
            b_artifact=b.artifact,
            stage=stage,
            rules=rules,
            finding=c.finding,
            explanation=c.explanation,
            changed=library_changes(a.libraries, b.libraries) if a.libraries != b.libraries else [],
        )


def pair_rules(a: Comparable, b: Comparable, thresholds: Thresholds, bitwise: bool = False) -> dict[str, bool]:
    """What every applicable pair rule decides for this pair (a bitwise pair: all the pair
    rules accept; replay still checks the output against the task: two identical cheats agree)."""
    from harness.compare.validators import RULES, applicable

    return {
        name: True if bitwise and name != "replay" else bool(fn(a, b, thresholds))
        for name, fn in RULES.items()
        if applicable(name, a, b)
    }


class _ArtifactProblem(RuntimeError):
    pass


def _axes_key(r: Record, *drop: str) -> AxesKey:
    d = r.axes.model_dump()
    for name in ("repeat", "worker", *drop):
        d.pop(name)
    return tuple(sorted(d.items()))


def execution_order(r: Record) -> tuple[int, int]:
    """The reference execution of a spec is the first: lowest worker, then repeat."""
    return (r.axes.worker, r.axes.repeat)


def _reference_of(records: list[Record]) -> Record:
    return min(records, key=execution_order)


def kernel_class(r: Record) -> str | None:
    """The kernel class the record's worker read back (harness.isa.kernel_class); None when
    the record has none (a GPU-only or an older record)."""
    kernels = r.determinism.get("kernels")
    found = kernels.get("class") if isinstance(kernels, dict) else None
    return found if isinstance(found, str) else None


def replay_side(r: Record, doc: dict[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> Side:
    """One side of a divergence to explain: the record's output, replayed under the
    configuration it ran in (its threads, batch, start, and the kernel level it really ran at)."""
    from harness.compare.replay import Side

    return Side(
        doc=doc,
        arrays=arrays,
        threads=r.axes.threads,
        isa=ran_at(r),
        batch_size=r.axes.batch_size,
        load=r.axes.load,
        response=r.output.get("response"),
        label=r.cell_id,
    )


def ran_at(r: Record) -> str:
    """The fixed kernel level the record ran at: a relative level (below-native) as its worker
    resolved it, read back in ``determinism.kernels.isa``."""
    if r.axes.isa not in RELATIVE_LEVELS:
        return r.axes.isa
    kernels = r.determinism.get("kernels")
    level = kernels.get("isa") if isinstance(kernels, dict) else None
    return level if isinstance(level, str) else r.axes.isa


def same_kernels(a: Record, b: Record) -> bool:
    """Both records read back one kernel class (the truth, not the CPU flags or the level asked)."""
    ka = kernel_class(a)
    return ka is not None and ka == kernel_class(b)


Aside = dict[str, list[tuple[str, str]]]


def _repro_pairs(
    cmp: _Comparer, config_id: str, ok: list[Record], reference_node: str | None = None
) -> tuple[dict[str, list[PairResult]], Aside]:
    """Repeat, process, batch, threads and load within each node; node against the reference node.
    Also the pairs set aside as no comparison (``SAME_KERNELS``), per dimension."""
    out: dict[str, list[PairResult]] = {d: [] for d in REPRO_DIMENSIONS}
    aside: Aside = defaultdict(list)
    by_node: dict[str | None, list[Record]] = defaultdict(list)
    for r in ok:
        by_node[node_key(r)].append(r)
    refs = {node: _within_node(cmp, config_id, recs, out, aside) for node, recs in by_node.items()}
    across = node_pairs(cmp.pair, config_id, refs, reference_node)
    if across:
        out[NODE] = across
    return out, aside


def _within_node(
    cmp: _Comparer, config_id: str, ok: list[Record], out: dict[str, list[PairResult]], aside: Aside
) -> dict[str, Record]:
    by_spec: dict[str, list[Record]] = defaultdict(list)
    for r in ok:
        by_spec[r.spec_hash].append(r)
    refs: dict[str, Record] = {}
    for spec, group in by_spec.items():
        ref = refs[spec] = _reference_of(group)
        for r in group:
            if r is ref:
                continue
            dim = "repeat" if r.axes.worker == ref.axes.worker else "process"
            out[dim].append(cmp.pair(dim, config_id, ref, r))
    ref_list = list(refs.values())
    for dim, axis, base in AXIS_DIMENSIONS:
        if axis is None:  # AXIS_DIMENSIONS holds only the dimensions that have an axis
            continue
        groups: dict[AxesKey, list[Record]] = defaultdict(list)
        for r in ref_list:
            groups[_axes_key(r, axis)].append(r)
        for group in groups.values():
            if len(group) < 2:
                continue
            group.sort(key=lambda r: getattr(r.axes, axis) or 0)
            anchor = next((r for r in group if getattr(r.axes, axis) == base), group[0])
            for r in group:
                if r is anchor:
                    continue
                if DIMENSIONS[dim].other_kernels and same_kernels(anchor, r):
                    aside[dim].append((anchor.cell_id, r.cell_id))  # one kernel class twice: no comparison
                else:
                    out[dim].append(cmp.pair(dim, config_id, anchor, r))
    return refs


def dimension_summaries(pairs: dict[str, list[PairResult]], aside: Aside) -> dict[str, DimensionSummary]:
    """Each dimension's pairs summarised, with the pairs set aside as no comparison counted apart."""
    dims = {d: summarize_pairs(p) for d, p in pairs.items()}
    for d, set_aside in aside.items():
        if set_aside:
            dims[d] = dims.get(d, DimensionSummary()).model_copy(
                update={"not_compared": len(set_aside), "not_compared_reason": SAME_KERNELS}
            )
    return dims


def _seed_sensitivity(cmp: _Comparer, config_id: str, ok: list[Record]) -> tuple[bool | None, str | None]:
    refs: dict[AxesKey, dict[int, Record]] = defaultdict(dict)
    for r in ok:
        key = _axes_key(r, "seed")
        current = refs[key].get(r.axes.seed)
        if current is None or execution_order(r) < execution_order(current):
            refs[key][r.axes.seed] = r
    identical = compared = 0
    for seeds in refs.values():
        items = sorted(seeds.items())
        for (_sa, a), (_sb, b) in itertools.pairwise(items):
            compared += 1
            identical += a.digests.get("output") == b.digests.get("output")
    if not compared:
        return None, None
    if identical == compared:
        return (
            False,
            f"different seeds gave identical outputs in {identical}/{compared} comparisons: the seed has no effect",
        )
    if identical:
        return True, f"different seeds gave identical outputs in {identical}/{compared} comparisons"
    return True, None


def record_latency(r: Record) -> float:
    """Seconds one execution cost beyond its model load (``total_s - load_s``, >= 0)."""
    return max(0.0, r.timings.get("total_s", 0.0) - r.timings.get("load_s", 0.0))


def latency_stats(records: list[Record]) -> Stats:
    """Latency statistics of ok executions with warm-up excluded and counted: the first
    execution after each model load (``load_s > 0``) runs cold kernels and allocators, so it
    is a warm-up unless nothing else is left."""
    ok = [r for r in records if r.status == "ok"]
    warm = [record_latency(r) for r in ok if r.timings.get("load_s", 0.0) > 0]
    measured = [record_latency(r) for r in ok if r.timings.get("load_s", 0.0) <= 0]
    if not measured:
        return summarize(warm)
    return summarize(warm + measured, warmup=len(warm))


def measured_latencies(records: list[Record]) -> list[float]:
    """The per-execution samples ``latency_stats`` summarises: the latencies of the ok
    executions that are not a warm-up (all of them when nothing else is left), in record
    order. What a significance test compares (harness.analysis.significance)."""
    ok = [r for r in records if r.status == "ok"]
    measured = [record_latency(r) for r in ok if r.timings.get("load_s", 0.0) <= 0]
    return measured or [record_latency(r) for r in ok]


def _cost(records: list[Record]) -> CostSummary:
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return CostSummary()
    latency = [record_latency(r) for r in ok]
    loads = [r.timings["load_s"] for r in ok if r.timings.get("load_s", 0.0) > 0]
    audio = sum(r.output.get("audio_seconds") or 0.0 for r in ok)
    tokens = sum(r.output.get("new_tokens") or 0 for r in ok)
    ttft = [r.timings["time_to_first_token_s"] for r in ok if "time_to_first_token_s" in r.timings]
    mem = [r.peak_memory_bytes for r in ok if r.peak_memory_bytes]
    return CostSummary(
        executions=len(ok),
        latency_s=latency_stats(ok).model_dump(),
        load_s=float(np.median(loads)) if loads else None,
        peak_memory_bytes=max(mem) if mem else None,
        memory_kind=ok[0].memory_kind,
        real_time_factor=real_time_factor(audio, sum(latency)) if audio else None,
        tokens_per_second=tokens_per_second(tokens, sum(latency)) if tokens else None,
        time_to_first_token_s=float(np.median(ttft)) if ttft else None,
        latency_samples=[round(x, 6) for x in latency],
    )


def record_environment(manifest: Any, r: Record) -> dict[str, Any]:
    """The environment fingerprint of the node that ran ``r`` (a fleet's node entry in the
    manifest, else the run's own environment)."""
    nodes = getattr(manifest, "nodes", None) or {}
    node = nodes.get(r.node.key) if r.node is not None else None
    env = node.get("environment") if isinstance(node, dict) else None
    return env if isinstance(env, dict) else (getattr(manifest, "environment", None) or {})


def record_scope(manifest: Any, r: Record) -> tuple[list[str], frozenset[tuple[str, str]]]:
    """What a calibration's scope says of one execution, the same when a calibration is made and
    when it is used: its GPUs (none for a cell that ran on the CPU, even on a host with GPUs)
    and its library versions (the record's own, which an execution on another stack has, else
    its node's environment)."""
    from harness.spec.calibration import gpu_label, library_versions

    env = record_environment(manifest, r)
    gpus = gpu_label(env) if r.axes.device != "cpu" else []
    return gpus, library_versions({"libraries": r.libraries} if r.libraries else env)


def config_facts(
    records: list[Record], verdict_dims: list[str], tasks: dict[str, Any] | None = None, manifest: Any = None
) -> Facts:
    """What a calibration's scope is checked against, from a configuration's ok records and
    the manifest's tasks (``max_new_tokens`` as the task asks it: a calibration's unit): the
    kernel classes of the executions the verdict judges (every isa level when isa is judged,
    else the native ones), and with ``manifest`` their GPUs and library versions."""
    first = records[0]
    judged = [r for r in records if "isa" in verdict_dims or r.axes.isa == NATIVE] or records
    task = ((tasks or {}).get(first.task_name) or {}).get("task") or {}
    kernels = {kernel_class(r) for r in judged}
    weights = next((r.model_meta.get("weights_sha256") for r in records if r.model_meta.get("weights_sha256")), None)
    scopes = [record_scope(manifest, r) for r in judged] if manifest is not None else []
    return Facts(
        kind=first.kind,
        model=first.model,
        dtype=first.axes.dtype,
        quantize_bits=first.axes.quantize_bits,
        weights_sha256=weights,
        new_tokens=new_tokens_asked(task),
        kernel_classes=frozenset(k for k in kernels if k is not None),
        gpus=frozenset(g for gpus, _ in scopes for g in gpus),
        libraries=frozenset(lib for _, libs in scopes for lib in libs),
    )


def _agreement(
    cmp: _Comparer, ok: list[Record], verdict_dims: list[str], named: NamedValidator | None = None
) -> tuple[dict[str, Figures], NetworkFigures | None]:
    """Per pair rule (each exactly what that validator decides), the figures of a 3-node
    validation group drawn from every execution the verdict judges (batch > 1 only when batch
    is judged), averaged over seeds; and the figures under the kind's network rule."""
    from harness.compare.agreement import group_figures
    from harness.compare.validators import RULES, applicable, network_rule

    groups: dict[int, list[Record]] = defaultdict(list)
    # an isa execution at native's own kernel class is native again, not another CPU kind
    native_kernels = {(node_key(r), kernel_class(r)) for r in ok if r.axes.isa == NATIVE and kernel_class(r)}
    loads = {r.axes.load for r in ok}
    anchor_load = "warm" if "warm" in loads else min(loads, default="warm")
    for r in ok:
        if r.axes.batch_size > 1 and "batch" not in verdict_dims:
            continue
        if r.axes.load != anchor_load and "load" not in verdict_dims:
            continue
        if r.axes.isa != NATIVE and "isa" not in verdict_dims:  # another CPU kind's kernels: reported only
            continue
        if r.axes.stack != CURRENT_STACK and "stack" not in verdict_dims:  # another stack: reported only
            continue
        if r.axes.isa != NATIVE and (node_key(r), kernel_class(r)) in native_kernels:
            continue
        groups[r.axes.seed].append(r)
    pools = [[cmp.get(r) for r in g] for g in groups.values() if len(g) >= 3]
    out: dict[str, Figures] = {}
    for name, fn in RULES.items():
        if pools and not applicable(name, pools[0][0], pools[0][0]):
            continue
        decide = _decider(fn, cmp)
        results = [group_figures(p, decide, name=name) for p in pools]
        if not results:
            out[name] = {"p3of3": None, "p2of3": None, "p_aborted": None, "invalidated": None, "triples": 0}
            continue
        out[name] = {
            key: float(np.mean([getattr(x, key) for x in results]))
            for key in ("p3of3", "p2of3", "p_aborted", "invalidated")
        }
        out[name]["triples"] = int(sum(x.triples for x in results))
    kind = ok[0].kind if ok else "audio"
    rule, label = network_rule(kind)
    if named is not None and named.rule == "replay" and "replay" in out:
        rule, label = "replay", "proposed: each node's output replayed against the task (harness replay)"
    fig = out.get(rule)
    network = (
        NetworkFigures(
            rule=rule,
            label=label,
            p_accepted=fig.get("p2of3"),
            p_aborted=fig.get("p_aborted"),
            invalidated=fig.get("invalidated"),
            p3of3=fig.get("p3of3"),
            triples=int(fig.get("triples") or 0),
        )
        if fig
        else None
    )
    return out, network


def _decider(fn: Validator, cmp: ComparableCache) -> Callable[[Comparable, Comparable], bool]:
    """A pair rule under the thresholds in force when it is asked (the comparer's current ones)."""
    return lambda a, b: fn(a, b, cmp.thresholds)


def _dtype_drift(cmp: _Comparer, by_config: dict[str, list[Record]]) -> dict[str, DimensionSummary]:
    """Each non-float32 (or quantized) configuration against its task's float32 reference,
    per seed, on batch-1 cells at the lowest thread count: the drift of a cheaper dtype is a
    property of the dtype, and comparing every batch/thread variant again cost most of the
    analysis time on large runs without adding information."""
    baseline: dict[tuple[str, str, str, AxesKey], Record] = {}
    lowest_threads: dict[str, int] = {}
    for config_id, recs in by_config.items():
        threads = [r.axes.threads or 0 for r in recs]
        lowest_threads[config_id] = min(threads) if threads else 0

    def eligible(r: Record) -> bool:
        return r.status == "ok" and r.axes.batch_size == 1 and (r.axes.threads or 0) == lowest_threads[r.config_id]

    for recs in by_config.values():
        for r in recs:
            if eligible(r) and r.axes.dtype == "float32" and not r.axes.quantize_bits:
                key = (r.task_name, r.axes.device, r.axes.profile, _axes_key(r, "dtype", "quantize_bits"))
                if key not in baseline or execution_order(r) < execution_order(baseline[key]):
                    baseline[key] = r
    out: dict[str, DimensionSummary] = {}
    for config_id, recs in by_config.items():
        pairs = []
        seen = set()
        for r in recs:
            if not eligible(r) or (r.axes.dtype == "float32" and not r.axes.quantize_bits):
                continue
            key = (r.task_name, r.axes.device, r.axes.profile, _axes_key(r, "dtype", "quantize_bits"))
            if key in baseline and key not in seen:
                seen.add(key)
                pairs.append(cmp.pair("dtype", config_id, baseline[key], r))
        if pairs:
            out[config_id] = summarize_pairs(pairs)
    return out


def analyze_run(run_dir: str | Path, verify_artifacts: bool = False) -> Analysis:
    """Analyse a run directory (garbage collection paused: 100k records allocate millions of
    small objects and the collector's passes dominated the time). The evidence check
    (harness.store.evidence) always runs; ``verify_artifacts`` lets it read every artifact and
    recompute every digest and receipt. Without it the evidence is unverified and the
    ``evidence`` gate fails: no gate passes on evidence nobody checked."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return _analyze_run(run_dir, verify_artifacts)
    finally:
        if enabled:
            gc.enable()


def _analyze_run(run_dir: str | Path, verify_artifacts: bool) -> Analysis:
    store = RunStore(run_dir)
    manifest = store.manifest()
    loaded = store.load_records()
    records = latest_records(loaded.records)
    from harness.spec.policy import policy_of

    policy = policy_of(manifest.matrix_spec, str(store.path / "manifest.json"))
    thresholds = policy.thresholds
    fail_on = policy.gates.fail_on  # typed: a fail_on given as a string is refused, never a substring test
    verdict_dims: list[str] = list(policy.gates.verdict_dimensions)
    replay_kinds = {kind for kind, v in policy.validators.items() if v.rule == "replay"}
    cmp = _Comparer(store, thresholds, RunReplay(manifest, replay_kinds) if replay_kinds else None)
    fleet = fleet_of(records)
    by_config: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_config[r.config_id].append(r)
    from harness.analysis.evidence import gather

    evidence = gather(store, manifest, loaded.records, loaded.problems, verify=verify_artifacts)
    problems = list(evidence.problems)  # unreadable lines (capped), missing, foreign, broken evidence
    drift = _dtype_drift_safe(cmp, by_config, problems)
    configs, examples = [], []
    for config_id in sorted(by_config):
        recs = by_config[config_id]
        first = recs[0]
        counts: dict[str, int] = defaultdict(int)
        for r in recs:
            counts[r.status] += 1
        failures = [f"{r.cell_id}: {r.reason}" for r in recs if r.status in FAILED_STATUSES][:10]
        ok = [r for r in recs if r.status == "ok"]
        cp = config_policy(policy, config_facts(ok or recs, verdict_dims, manifest.matrix_tasks, manifest))
        cmp.use(cp)
        validator = cp.validator
        try:
            pairs, aside = _repro_pairs(cmp, config_id, ok, fleet.reference_node if fleet else None)
            nodes = (
                config_nodes(
                    cmp.pair,
                    config_id,
                    ok,
                    pairs,
                    fleet,
                    functools.partial(judge, cp=cp),
                    summarize_pairs,
                    verdict_dims,
                )
                if fleet
                else None
            )
        except _ArtifactProblem as err:
            problems.append(f"{config_id}: artifact unreadable, config not judged ({err})")
            pairs, aside, nodes = {d: [] for d in REPRO_DIMENSIONS}, {}, None
            failures.append(f"artifact unreadable: {err}")
            counts["failed"] += 1
        dims = dimension_summaries(pairs, aside)
        skip_reason = next((r.reason for r in recs if r.status == "skipped"), None)
        verdict, reason, decided_by = judge_configuration(dict(counts), dims, failures, skip_reason, verdict_dims, cp)
        seed_sensitive, seed_note = _seed_sensitivity(cmp, config_id, ok)
        worst_pairs = sorted(
            (p for ps in pairs.values() for p in ps if p.level != "bitwise"), key=lambda p: -level_rank(p.level)
        )
        if worst_pairs:
            examples.append(worst_pairs[0])
        agreement: dict[str, Figures] = {}
        network: NetworkFigures | None = None
        try:
            if verdict not in ("failed", "skipped"):
                agreement, network = _agreement(cmp, ok, verdict_dims, validator)
        except StoreError as err:  # a corrupted artifact is reported, never a crash
            problems.append(f"{config_id}: agreement not estimated ({str(err).splitlines()[0] if str(err) else err!r})")
        configs.append(
            ConfigResult(
                config_id=config_id,
                task=first.task_name,
                kind=first.kind,
                model=first.model,
                dtype=first.axes.dtype,
                quantize_bits=first.axes.quantize_bits,
                device=first.axes.device,
                profile=first.axes.profile,
                verdict=verdict,
                reason=reason,
                decided_by=list(decided_by),
                counts=dict(counts),
                dimensions=dims,
                agreement=agreement,
                network=network,
                validator=validator.model_dump(mode="json", exclude={"calibration"}) if validator else None,
                thresholds=cp.thresholds.model_dump() if validator and validator.calibrated else None,
                out_of_scope=cp.out_of_scope,
                seed_sensitive=seed_sensitive,
                seed_note=seed_note,
                dtype_drift=drift.get(config_id),
                lint=sorted({w for r in recs for w in r.lint}),
                quantization=next(
                    (r.model_meta.get("quantization") for r in ok if r.model_meta.get("quantization")), None
                ),
                cost=_cost(recs),
                failures=failures,
                nodes=nodes,
                replay=cmp.replay.config_summary([cmp.get(r) for r in ok], margin_source(cp))
                if cmp.replay and ok and cmp.replay.covers(ok[0])
                else None,
            )
        )
    gates = []
    for c in configs:
        failed = c.verdict in fail_on or ("seed_insensitive" in fail_on and c.seed_sensitive is False)
        gates.append(
            GateResult(
                config_id=c.config_id,
                passed=not failed,
                reason=f"{c.verdict}: {c.reason}" + (f"; {c.seed_note}" if c.seed_note else ""),
            )
        )
    if not evidence.ok:  # a verdict is only as good as its evidence: any gap fails the gate
        gates.append(
            GateResult(
                config_id="evidence",
                passed=False,
                reason=f"{len(evidence.problems)} evidence problem(s); first: {evidence.problems[0]}",
            )
        )
    a = Analysis(
        run_id=manifest.run_id or Path(run_dir).name,
        run_dir=str(run_dir),
        matrix=manifest.matrix_name,
        description=str(manifest.matrix_spec.get("description", "")),
        harness_version=manifest.harness_version,
        environment=manifest.environment or {},
        tiny_models=manifest.tiny_models,
        thresholds=thresholds.model_dump(),
        gate_rules=list(fail_on),
        verdict_dimensions=verdict_dims,
        records=len(loaded.records),
        problems=problems,
        configs=configs,
        examples=examples,
        gates=gates,
        models=model_rows(configs),
        fleet=fleet,
        parallel_note=parallel_note(records, manifest.execution or []),
        evidence=evidence.model_dump(exclude={"problems"}),
    )
    return with_summary(a, run_dir, records, verdict_dims)


def with_summary(a: Analysis, run_dir: str | Path, records: list[Record], verdict_dims: list[str]) -> Analysis:
    """Add the run's distinct warnings (worker logs and records) and its summary."""
    from harness.analysis.logs import run_warnings
    from harness.analysis.summary import summarize

    a.warnings = run_warnings(Path(run_dir), records)
    a.summary = summarize(a, verdict_dims)
    return a


def _dtype_drift_safe(
    cmp: _Comparer, by_config: dict[str, list[Record]], problems: list[str]
) -> dict[str, DimensionSummary]:
    try:
        return _dtype_drift(cmp, by_config)
    except _ArtifactProblem as err:
        problems.append(f"dtype drift not computed ({err})")
        return {}


def model_rows(configs: list[ConfigResult]) -> list[ModelRow]:
    by_model: dict[tuple[str, str], list[ConfigResult]] = defaultdict(list)
    for c in configs:
        by_model[(c.model, c.kind)].append(c)
    rows = []
    for (model, kind), cs in sorted(by_model.items()):
        verdicts: dict[str, int] = defaultdict(int)
        for c in cs:
            verdicts[c.verdict] += 1
        medians = [m for m in (c.cost.latency_s.get("median") for c in cs) if m is not None]
        mems = [c.cost.peak_memory_bytes for c in cs if c.cost.peak_memory_bytes]
        rows.append(
            ModelRow(
                model=model,
                kind=kind,
                configs=len(cs),
                verdicts=dict(sorted(verdicts.items())),
                best_verdict=min((c.verdict for c in cs), key=VERDICT_ORDER.index),
                median_latency_s=float(np.median(medians)) if medians else None,
                peak_memory_bytes=max(mems) if mems else None,
            )
        )
    return rows
