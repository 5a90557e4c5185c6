"""What a calibration is made from: the executions of runs and bundles, their honest pairs, the
split by task and the rates.

Why here (analysis): ``harness calibrate`` reads runs as the run analysis does (records,
Comparables over their artifacts, the manifest's environment), and pairs executions by the
same comparison dimensions (harness.vocabulary.DIMENSIONS). It pairs more than the analysis
does: every two executions of one configuration and one task that exactly one source separates
(one axis, or the worker, the repeat, the node, or the run: ``machine``), not only each against
its anchor, so a study's executions give as many honest pairs as they can.

A *task* is the task document (its prompt or messages, generation settings) and the seed; a
*configuration* is the kind, model, weights, dtype and quantization. Held out: tasks are
ordered by the digest of their identity and alternate between the calibration half and the
held-out half, so a task is never in both, the split is the same on every machine, and both
halves are non-empty from two tasks on.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.analysis.run import comparable, kernel_class, record_scope
from harness.compare.levels import Comparable, float_metrics
from harness.digests import digest_json
from harness.errors import HarnessError
from harness.spec.calibration import Rate, config_name, new_tokens_asked, precision_name
from harness.spec.matrix import apply_axes
from harness.store.manifest import Manifest
from harness.store.records import Record
from harness.store.run import RunStore
from harness.vocabulary import AXIS_DIMENSIONS

#: composite and decoder bounds = the largest honest spread of the calibration half times this
CALIBRATION_MARGIN = 2.0
#: the axes a cell varies over and the source each stands for; ``device`` has no anchor
#: dimension of its own in the run analysis, but two devices are an honest source
AXIS_SOURCES = {axis: name for name, axis, _ in AXIS_DIMENSIONS} | {"device": "device"}
#: sources whose pairs a sampled task cannot pass (a batch draws other random numbers, a cold
#: load draws before seeding): left out of a study of sampled tasks, and said so
SAMPLED_DIVERGE = {
    "batch": "a sampled task in a batch draws other random numbers (diverges by design)",
    "load": "loading the model draws random numbers, so cold and warm diverge by design",
}
TASK_SETTINGS = ("dtype", "quantize_bits", "seed", "model")
DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16}


class CalibrationInputError(HarnessError, ValueError):
    """Runs or bundles a calibration cannot be made from; one line naming the run and why."""


def wilson(errors: int, pairs: int) -> Rate:
    """A rate with its Wilson 95% interval (scipy's); no pairs: 0 with the interval [0, 1]."""
    from scipy.stats import binomtest

    if pairs == 0:
        return Rate(rate=0.0, low=0.0, high=1.0, errors=0, pairs=0)
    ci = binomtest(errors, pairs).proportion_ci(confidence_level=0.95, method="wilson")
    return Rate(rate=errors / pairs, low=float(ci.low), high=float(ci.high), errors=errors, pairs=pairs)


@dataclass(frozen=True)
class ConfigKey:
    kind: str
    model: str
    dtype: str
    quantize_bits: int | None

    @property
    def name(self) -> str:
        return config_name(self.kind, self.model, self.dtype, self.quantize_bits)

    @property
    def precision(self) -> str:
        return precision_name(self.dtype, self.quantize_bits)

    @property
    def bits(self) -> int:
        """Bits per weight: what "a lower precision passed off" compares (a cheaper run has fewer)."""
        return self.quantize_bits or DTYPE_BITS.get(self.dtype, 32)


@dataclass(frozen=True, eq=False)
class Execution:
    """One ok execution of a study, with what pairing, splitting and scoping need."""

    record: Record
    output: Comparable
    source: int  # which run or bundle given (0-based)
    config: ConfigKey
    task: str  # the task identity: task document and seed
    prompt: str  # the task document without the seed (tasks of one prompt share it)
    seed: int
    sampled: bool
    new_tokens: int | None
    weights: str | None
    kernel_class: str | None
    gpus: tuple[str, ...]
    libraries: frozenset[tuple[str, str]]
    doc: dict[str, Any]  # the task document this execution ran (its axes applied)

    @property
    def label(self) -> str:
        return f"{self.source}:{self.record.cell_id}"


def task_identity(base: dict[str, Any], seed: int) -> tuple[str, str]:
    """(task, prompt) digests of a cell's task document: without the settings a cell's axes
    set (dtype, quantization, seed) and the model (a configuration's), with and without the seed."""
    doc = {k: v for k, v in base.items() if k not in TASK_SETTINGS}
    prompt = digest_json(doc)[:16]
    return digest_json({"task": prompt, "seed": seed})[:16], prompt


@dataclass(frozen=True)
class StudyRun:
    """One study run or bundle as read once: its store, manifest and latest record per cell."""

    store: RunStore
    manifest: Manifest
    records: list[Record]


def executions(runs: Sequence[StudyRun]) -> list[Execution]:
    """The ok executions of each run, in the order given (a run's index is its ``source``)."""
    out = []
    for i, run in enumerate(runs):
        store, manifest = run.store, run.manifest
        tasks = manifest.matrix_tasks
        for r in run.records:
            if r.status != "ok":
                continue
            base = (tasks.get(r.task_name) or {}).get("task") or {"task_name": r.task_name}
            task, prompt = task_identity(base, r.axes.seed)
            gen = base.get("generation_config") or {}
            gpus, libraries = record_scope(manifest, r)
            out.append(
                Execution(
                    record=r,
                    output=comparable(store, r),
                    source=i,
                    config=ConfigKey(r.kind, r.model, r.axes.dtype, r.axes.quantize_bits),
                    task=task,
                    prompt=prompt,
                    seed=r.axes.seed,
                    sampled=bool(gen.get("do_sample", True)),
                    new_tokens=new_tokens_asked(base),
                    weights=r.model_meta.get("weights_sha256"),
                    kernel_class=kernel_class(r),
                    gpus=tuple(gpus),
                    libraries=libraries,
                    doc=apply_axes(r.kind, base, r.axes.model_dump()) if r.task_name in tasks else {},
                )
            )
    return out


def separating(a: Execution, b: Execution) -> str | None:
    """The one source that separates two executions of one task and configuration, or None
    when more than one thing differs (such a pair stands for no single source), or when two
    kernel levels ran the same kernels (an AVX2-only CPU's native and avx2: no isa comparison)."""
    da, db = a.record.axes.model_dump(), b.record.axes.model_dump()
    axes = [k for k in da if k not in ("repeat", "worker") and da[k] != db[k]]
    if a.source != b.source:
        return "machine" if not axes else None
    if len(axes) > 1 or any(k not in AXIS_SOURCES for k in axes):
        return None
    node_a = a.record.node.key if a.record.node else None
    node_b = b.record.node.key if b.record.node else None
    if axes == ["isa"] and a.kernel_class is not None and a.kernel_class == b.kernel_class:
        return None  # the same kernels under two level names: not a comparison of kernels
    if axes:
        return AXIS_SOURCES[axes[0]] if node_a == node_b else None
    if node_a != node_b:
        return "node"
    return "process" if da["worker"] != db["worker"] else "repeat"


@dataclass(frozen=True, eq=False)
class HonestPair:
    source: str
    task: str
    a: Execution
    b: Execution

    @property
    def codes_equal(self) -> bool:
        return self.a.output.tokens_digest() == self.b.output.tokens_digest()


def honest_pairs(runs: Iterable[Execution]) -> tuple[dict[ConfigKey, list[HonestPair]], list[str]]:
    """Every pair of executions of one configuration and task that one source separates, per
    configuration; and a note per source left out because the tasks are sampled."""
    groups: dict[tuple[ConfigKey, str], list[Execution]] = defaultdict(list)
    for e in runs:
        groups[(e.config, e.task)].append(e)
    out: dict[ConfigKey, list[HonestPair]] = defaultdict(list)
    left_out: dict[str, int] = defaultdict(int)
    for (config, task), group in sorted(groups.items(), key=lambda kv: (kv[0][0].name, kv[0][1])):
        group.sort(key=lambda e: (e.source, e.record.cell_id))
        for a, b in itertools.combinations(group, 2):
            source = separating(a, b)
            if source is None:
                continue
            if source in SAMPLED_DIVERGE and (a.sampled or b.sampled):
                left_out[source] += 1
                continue
            out[config].append(HonestPair(source, task, a, b))
    notes = [f"{s}: {n} pair(s) left out: {SAMPLED_DIVERGE[s]}" for s, n in sorted(left_out.items())]
    return dict(out), notes


def held_out(tasks: Iterable[str]) -> frozenset[str]:
    """The held-out half: tasks ordered by their identity's digest, every second one."""
    ordered = sorted(set(tasks), key=lambda t: digest_json({"held-out": t}))
    return frozenset(ordered[1::2])


def waveform_spread(pairs: Iterable[HonestPair]) -> tuple[float, float]:
    """The largest max-abs and rel-L2 between the waveforms of honest pairs with equal codes."""
    max_abs = rel = 0.0
    for p in pairs:
        if not p.codes_equal:
            continue
        m = float_metrics(p.a.output.arrays["waveform"], p.b.output.arrays["waveform"])
        if m.get("max_abs") is not None:
            max_abs, rel = max(max_abs, float(m["max_abs"] or 0.0)), max(rel, float(m["rel_l2"] or 0.0))
    return max_abs, rel
