"""Compare two runs cell by cell: are this machine's outputs those of the reference machine?

Matching. ``match="spec"`` (default) pairs executions with equal spec hashes: the same task
under the same axes, which is what two nodes of a network receive. ``match="ignore:AXIS"``
(threads, batch_size, dtype, load, isa or device) pairs cells equal in everything but that
axis (``ignore:device``: a CPU reference against its cells re-run on a GPU); on one
machine, two runs with different thread counts stand in honestly for two kinds of hardware
(the thread count changes the order of float reductions, as another CPU or GPU does); a
run on one machine with threads=1 and one with threads=2 then compare cell by cell. Within
a spec the reference execution is used (lowest worker, then repeat), as in the analysis.

Per matched pair: the strongest comparison level, its metrics and the first divergent step
(harness.compare.levels, on Comparables built by harness.analysis.run.comparable). Per configuration
(the reference's config id): the worst level, plus every cell that failed, was skipped or
has no partner. Differences are grouped by what differed: environment fingerprint fields
(harness.execution.env.differing_fields), axes that differ across a pair, and determinism flags the
two records report. Outputs only; costs are compared by harness.analysis.costs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from harness.analysis.judgement import Judgement, judge, summarize_pairs
from harness.analysis.model import DimensionSummary, PairResult
from harness.analysis.run import ComparableCache, config_facts, execution_order, latest_records, pair_rules
from harness.compare.levels import Thresholds, compare, level_rank, worst_level
from harness.digests import digest_json
from harness.errors import WorkflowError
from harness.execution.env import described_differences, differing_fields
from harness.spec.policy import ConfigPolicy, NamedValidator, config_policy, policy_of
from harness.store.manifest import CHECKED_ON_COMPARE, Manifest, check_metadata
from harness.store.records import Record
from harness.store.run import RunStore, StoreError
from harness.vocabulary import FAILED_STATUSES

CROSSRUN_SCHEMA_VERSION = 1
IGNORABLE_AXES = ("threads", "batch_size", "dtype", "load", "isa", "device", "stack")
MATCH_MODES = ("spec", *(f"ignore:{a}" for a in IGNORABLE_AXES))  # several: ignore:threads,isa


class CrossRunError(WorkflowError):
    """Two runs that cannot be compared as asked (an unknown match mode, other model weights)."""


def parse_match(text: str) -> tuple[str, ...] | None:
    """The axes a match mode ignores (None for ``spec``; ``ignore:threads,isa`` ignores both);
    a bad mode is a CrossRunError."""
    if text == "spec":
        return None
    axes = tuple(text.split(":", 1)[1].split(",")) if text.startswith("ignore:") else ()
    if axes and all(a in IGNORABLE_AXES for a in axes) and len(set(axes)) == len(axes):
        return axes
    raise CrossRunError(
        f"unknown match mode {text!r}; expected one of {', '.join(MATCH_MODES)} (or several axes: ignore:threads,isa)"
    )


class SpecMatch(BaseModel):
    """One reference execution of run A against its partner in run B."""

    key: str
    task: str
    kind: str
    config_a: str
    config_b: str
    spec_a: str
    spec_b: str
    cell_a: str
    cell_b: str
    axes_differ: dict[str, list[Any]] = Field(default_factory=dict)  # axis -> [value in A, value in B]
    determinism_differ: list[str] = Field(default_factory=list)
    level: str | None = None  # None when the pair could not be compared (see error)
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    first_divergence: int | None = None
    steps_total: int | None = None
    within_a: str | None = None  # worst level among A's executions of this spec (None: one execution)
    within_b: str | None = None
    finding: str | None = None  # harness.compare.levels.FINDING_TEXT key, across or within a side
    finding_in: Literal["across", "a", "b"] | None = None  # which comparison drew the finding
    rules: dict[str, bool] = Field(default_factory=dict)  # pair rule -> accepted (A vs B)
    within_a_rules: dict[str, bool] = Field(default_factory=dict)  # every own execution accepted vs A's reference
    within_b_rules: dict[str, bool] = Field(default_factory=dict)
    error: str | None = None


class ConfigOutcome(BaseModel):
    """Everything run B says about one configuration of run A."""

    config_id: str
    task: str
    kind: str
    model: str
    dtype: str | None = None  # the configuration's, from its records (never parsed out of config_id)
    quantize_bits: int | None = None
    matched: int = 0
    levels: dict[str, int] = Field(default_factory=dict)
    worst: str | None = None
    first_divergence: list[int] = Field(default_factory=list)
    unmatched_a: list[str] = Field(default_factory=list)  # A cells with no partner in B
    failed_a: list[str] = Field(default_factory=list)  # "cell: reason"
    skipped_a: list[str] = Field(default_factory=list)
    failed_b: list[str] = Field(default_factory=list)
    skipped_b: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)  # pairs that could not be compared
    findings: dict[str, int] = Field(default_factory=dict)  # finding -> pairs (across or within a side)
    rejected: dict[str, int] = Field(default_factory=dict)  # pair rule -> pairs it rejects (across or within)
    within_a: str | None = None  # worst level among each side's own executions of a spec
    within_b: str | None = None
    # the validator that judges this configuration (rates and bounds from its calibration entry),
    # or why the named calibration has none for it
    validator: dict[str, Any] | None = None
    out_of_scope: str | None = None
    bounds_from: str | None = None
    kernel_classes: dict[str, list[str]] = Field(default_factory=dict)  # side label -> kernel classes


class DifferenceGroup(BaseModel):
    """Pairs that share the same set of differing fields, and the levels they reached."""

    fields: list[str]
    pairs: int
    levels: dict[str, int]
    worst: str | None


class RunSide(BaseModel):
    label: str
    source: str
    run_id: str
    matrix: str
    environment: dict[str, Any] = Field(default_factory=dict)
    records: int = 0
    bundle_sha256: str | None = None
    manifest_sha256: str | None = None


class CrossRunResult(BaseModel):
    schema_version: int = CROSSRUN_SCHEMA_VERSION
    match: str
    thresholds: dict[str, Any]
    a: RunSide
    b: RunSide
    environment_differs: list[str] = Field(default_factory=list)
    matches: list[SpecMatch] = Field(default_factory=list)
    configs: list[ConfigOutcome] = Field(default_factory=list)
    unmatched_b: list[str] = Field(default_factory=list)  # B cells with no partner in A
    groups: list[DifferenceGroup] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)

    @property
    def worst(self) -> str | None:
        return worst_level(m.level for m in self.matches if m.level)


# --- building blocks ---------------------------------------------------------------------------


@dataclass
class _Spec:
    spec_hash: str
    key: str
    records: list[Record] = field(default_factory=list)

    @property
    def ok(self) -> list[Record]:
        return [r for r in self.records if r.status == "ok"]

    @property
    def reference(self) -> Record | None:
        ok = self.ok
        return min(ok, key=execution_order) if ok else None

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.status in FAILED_STATUSES]

    @property
    def first(self) -> Record:
        return min(self.records, key=execution_order)


def _match_key(r: Record, ignore: tuple[str, ...] | None, tasks: dict[str, Any]) -> str:
    if ignore is None:
        return r.spec_hash
    axes = r.axes.model_dump()
    for name in ("repeat", "worker", *ignore):
        axes.pop(name)
    base = tasks.get(r.task_name, {}).get("task") or {"task_name": r.task_name, "model": r.model}
    return digest_json({"task": base, "kind": r.kind, "axes": axes})[:16]


def _specs(
    store: RunStore, manifest: Manifest, ignore: tuple[str, ...] | None
) -> tuple[dict[str, list[_Spec]], list[str], int]:
    loaded = store.load_records()
    tasks = manifest.matrix_tasks
    by_spec: dict[str, _Spec] = {}
    for r in latest_records(loaded.records):
        spec = by_spec.get(r.spec_hash)
        if spec is None:
            spec = by_spec[r.spec_hash] = _Spec(r.spec_hash, _match_key(r, ignore, tasks))
        spec.records.append(r)
    by_key: dict[str, list[_Spec]] = defaultdict(list)
    for spec in by_spec.values():
        by_key[spec.key].append(spec)
    for specs in by_key.values():
        specs.sort(key=lambda s: s.first.cell_id)
    return dict(by_key), [f"{store.path}: {p}" for p in loaded.problems], len(loaded.records)


class _Side(ComparableCache):
    """One run's records as Comparables, and how well a spec agrees with its own repeats."""

    def within(self, spec: _Spec) -> tuple[str | None, dict[str, bool], str | None]:
        """(worst level, rule decisions AND-ed, first finding) among a spec's own executions."""
        ref, ok = spec.reference, spec.ok
        if ref is None or len(ok) < 2:
            return None, {}, None
        levels: list[str] = []
        rules: dict[str, bool] = {}
        finding: str | None = None
        for r in ok:
            if r is ref:
                continue
            c = compare(self.get(ref), self.get(r), self.thresholds, bounds_measured=self.bounds_measured)
            levels.append(c.level)
            finding = finding or c.finding
            for k, v in pair_rules(self.get(ref), self.get(r), self.thresholds, c.level == "bitwise").items():
                rules[k] = rules.get(k, True) and v
        return worst_level(levels), rules, finding


def _failure_line(r: Record) -> str:
    return f"{r.cell_id}: {r.status}: {r.reason or '?'}"


def _status_line(spec: _Spec) -> tuple[str, str]:
    r = spec.first
    if spec.failed:
        return "failed", _failure_line(spec.failed[0])
    return "skipped", f"{r.cell_id}: {r.reason or 'skipped'}"


def _axes_differ(a: Record, b: Record) -> dict[str, list[Any]]:
    da, db = a.axes.model_dump(), b.axes.model_dump()
    return {k: [da[k], db[k]] for k in da if k not in ("repeat", "worker") and da[k] != db[k]}


def _unwrap(run: Any) -> tuple[RunStore, str, str | None, str | None]:
    """A RunStore, or an OpenedRun from harness.store.bundle (keeps its source and bundle digests)."""
    if isinstance(run, RunStore):
        return run, str(run.path), None, None
    store = getattr(run, "store", None)
    if isinstance(store, RunStore):
        bundle = getattr(run, "bundle", None) or {}
        return (
            store,
            str(getattr(run, "source", store.path)),
            bundle.get("bundle_sha256"),
            bundle.get("manifest_sha256"),
        )
    raise TypeError(f"expected a RunStore or an opened run, got {type(run).__name__}")


def _side_info(
    label: str, source: str, manifest: Manifest, records: int, bundle_sha: str | None, manifest_sha: str | None
) -> RunSide:
    return RunSide(
        label=label,
        source=source,
        run_id=str(manifest.run_id or Path(source).name),
        matrix=manifest.matrix_name,
        environment=manifest.environment or {},
        records=records,
        bundle_sha256=bundle_sha,
        manifest_sha256=manifest_sha,
    )


# --- the comparison ------------------------------------------------------------------------------


def compare_runs(
    run_a: Any,
    run_b: Any,
    thresholds: Thresholds | None = None,
    *,
    match: str = "spec",
    labels: tuple[str, str] = ("A", "B"),
    only_a: set[str] | None = None,
) -> CrossRunResult:
    """Compare run B against reference run A (RunStores or harness.store.bundle.OpenedRun).

    ``thresholds`` default to those of A's matrix; ``only_a`` restricts A to these spec
    hashes (the cells a partial re-run covers)."""
    ignore = parse_match(match)
    store_a, source_a, bsha_a, msha_a = _unwrap(run_a)
    store_b, source_b, bsha_b, msha_b = _unwrap(run_b)
    man_a, man_b = store_a.manifest(), store_b.manifest()
    check_metadata(man_a, man_b, CHECKED_ON_COMPARE, f"cannot compare {source_a} with {source_b}")
    policy = policy_of(man_a.matrix_spec, "manifest")
    thr = thresholds or policy.thresholds
    keys_a, problems_a, n_a = _specs(store_a, man_a, ignore)
    keys_b, problems_b, n_b = _specs(store_b, man_b, ignore)
    side_a, side_b = _Side(store_a, thr), _Side(store_b, thr)
    env_a, env_b = man_a.environment or {}, man_b.environment or {}
    env_diff = described_differences(env_a, env_b)  # library versions named with their values
    result = CrossRunResult(
        match=match,
        thresholds=thr.model_dump(),
        a=_side_info(labels[0], source_a, man_a, n_a, bsha_a, msha_a),
        b=_side_info(labels[1], source_b, man_b, n_b, bsha_b, msha_b),
        environment_differs=env_diff,
        problems=problems_a + problems_b,
    )
    configs: dict[str, ConfigOutcome] = {}

    policies: dict[str, ConfigPolicy] = {}

    def outcome(spec: _Spec) -> ConfigOutcome:
        r = spec.first
        if r.config_id not in configs:
            configs[r.config_id] = ConfigOutcome(
                config_id=r.config_id,
                task=r.task_name,
                kind=r.kind,
                model=r.model,
                dtype=r.axes.dtype,
                quantize_bits=r.axes.quantize_bits,
            )
        return configs[r.config_id]

    def judged_by(out: ConfigOutcome, sa: _Spec, sb: _Spec) -> None:
        """Both sides compared with this configuration's bounds (its calibration entry's, when
        the scope holds the kernel classes of both sides), set once per configuration."""
        if out.config_id not in policies:
            facts_a, facts_b = (
                config_facts(sa.ok, ["isa"], man_a.matrix_tasks, man_a),
                config_facts(sb.ok, ["isa"], man_b.matrix_tasks, man_b),
            )
            facts = replace(
                facts_a,
                kernel_classes=facts_a.kernel_classes | facts_b.kernel_classes,
                gpus=facts_a.gpus | facts_b.gpus,
                libraries=facts_a.libraries | facts_b.libraries,
            )
            cp = (
                config_policy(policy, facts)
                if thresholds is None
                else ConfigPolicy(policy.validators.get(out.kind), thr)
            )
            policies[out.config_id] = cp
            out.validator = cp.validator.model_dump(mode="json", exclude={"calibration"}) if cp.validator else None
            out.out_of_scope, out.bounds_from = cp.out_of_scope, cp.bounds_from
            out.kernel_classes = {labels[0]: sorted(facts_a.kernel_classes), labels[1]: sorted(facts_b.kernel_classes)}
        cp = policies[out.config_id]
        for side in (side_a, side_b):
            side.use(cp)

    for key in sorted(keys_a):
        partners = keys_b.get(key, [])
        for sa in keys_a[key]:
            if only_a is not None and sa.spec_hash not in only_a:
                continue
            out = outcome(sa)
            if sa.reference is None:
                status, line = _status_line(sa)
                (out.failed_a if status == "failed" else out.skipped_a).append(line)
                continue
            out.failed_a += [_failure_line(r) for r in sa.failed]  # some executions failed, others ran
            if not partners:
                out.unmatched_a.append(sa.reference.cell_id)
                continue
            for sb in partners:
                if sb.reference is None:
                    status, line = _status_line(sb)
                    (out.failed_b if status == "failed" else out.skipped_b).append(line)
                    continue
                out.failed_b += [_failure_line(r) for r in sb.failed]
                judged_by(out, sa, sb)
                m = _compare_pair(side_a, side_b, sa, sb, key)
                result.matches.append(m)
                if m.error:
                    out.errors.append(m.error)
                    continue
                assert m.level is not None  # _compare_pair sets a level whenever it records no error
                out.matched += 1
                out.levels[m.level] = out.levels.get(m.level, 0) + 1
                if m.finding:
                    out.findings[m.finding] = out.findings.get(m.finding, 0) + 1
                for decisions in (m.rules, m.within_a_rules, m.within_b_rules):
                    for rule, ok in decisions.items():
                        out.rejected[rule] = out.rejected.get(rule, 0) + (not ok)
                out.within_a = worst_level(x for x in (out.within_a, m.within_a) if x)
                out.within_b = worst_level(x for x in (out.within_b, m.within_b) if x)
                if m.level != "bitwise" and m.first_divergence is not None:
                    out.first_divergence.append(m.first_divergence)
    for key in sorted(keys_b):
        if not any(only_a is None or s.spec_hash in only_a for s in keys_a.get(key, [])):
            result.unmatched_b += [s.first.cell_id for s in keys_b[key]]
    for out in configs.values():
        out.levels = dict(sorted(out.levels.items(), key=lambda kv: level_rank(kv[0])))
        out.worst = worst_level(out.levels)
        out.first_divergence.sort()
    result.configs = [configs[c] for c in sorted(configs)]
    result.groups = group_differences(result.matches, env_diff)
    return result


def _compare_pair(side_a: _Side, side_b: _Side, sa: _Spec, sb: _Spec, key: str) -> SpecMatch:
    ra, rb = sa.reference, sb.reference
    assert ra is not None and rb is not None
    m = SpecMatch(
        key=key,
        task=ra.task_name,
        kind=ra.kind,
        config_a=ra.config_id,
        config_b=rb.config_id,
        spec_a=sa.spec_hash,
        spec_b=sb.spec_hash,
        cell_a=ra.cell_id,
        cell_b=rb.cell_id,
        axes_differ=_axes_differ(ra, rb),
        determinism_differ=[f"determinism.{f}" for f in differing_fields(ra.determinism, rb.determinism)],
    )
    try:
        c = compare(side_a.get(ra), side_b.get(rb), side_a.thresholds, bounds_measured=side_a.bounds_measured)
        m.level, m.metrics, m.first_divergence, m.steps_total = c.level, c.metrics, c.first_divergence, c.steps_total
        m.rules = pair_rules(side_a.get(ra), side_b.get(rb), side_a.thresholds, c.level == "bitwise")
        m.within_a, m.within_a_rules, fa = side_a.within(sa)
        m.within_b, m.within_b_rules, fb = side_b.within(sb)
        m.finding = c.finding or fa or fb
        m.finding_in = "across" if c.finding else "a" if fa else "b" if fb else None
    except StoreError as err:  # a corrupted or missing artifact: reported, never a crash; a bug still surfaces
        m.error = f"{ra.cell_id} vs {rb.cell_id}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return m


def group_differences(matches: Iterable[SpecMatch], env_diff: list[str]) -> list[DifferenceGroup]:
    """Pairs grouped by what differed: environment fields, axes and determinism flags."""
    groups: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for m in matches:
        if m.level is None:
            continue
        fields = tuple(sorted({*env_diff, *(f"axes.{a}" for a in m.axes_differ), *m.determinism_differ}))
        groups[fields][m.level] += 1
    out = []
    for fields, levels in sorted(groups.items()):
        ordered = dict(sorted(levels.items(), key=lambda kv: level_rank(kv[0])))
        out.append(
            DifferenceGroup(
                fields=list(fields), pairs=sum(ordered.values()), levels=ordered, worst=worst_level(ordered)
            )
        )
    return out


def consensus_outcomes(
    result: CrossRunResult, envs: tuple[str, str] = ("A", "B")
) -> list[dict[tuple[str, str], dict[str, bool]]]:
    """Per compared pair, the rule decisions harness.compare.agreement needs: across the two
    environments and (where measured) within each."""
    a, b = envs
    out = []
    for m in result.matches:
        if m.level is None:
            continue
        o: dict[tuple[str, str], dict[str, bool]] = {(a, b): dict(m.rules)}
        if m.within_a is not None:
            o[(a, a)] = dict(m.within_a_rules)
        if m.within_b is not None:
            o[(b, b)] = dict(m.within_b_rules)
        out.append(o)
    return out


#: the name of the comparison between the two runs (each A execution against its partner in B);
#: each side's own comparisons are "<label> repeats" (a spec's other executions against its first)
ACROSS = "machines"


def outcome_comparisons(out: ConfigOutcome, result: CrossRunResult) -> dict[str, DimensionSummary]:
    """A configuration's comparisons as the judgement reads them: ``machines`` and each side's
    own repeats, each pair's finding counted on the comparison that drew it."""
    names = {"across": ACROSS, "a": f"{result.a.label} repeats", "b": f"{result.b.label} repeats"}
    pairs: dict[str, list[PairResult]] = {name: [] for name in names.values()}
    for m in result.matches:
        if m.config_a != out.config_id or m.level is None:
            continue
        sides = (
            ("across", m.level, m.rules, m.cell_b, m.first_divergence),
            ("a", m.within_a, m.within_a_rules, m.cell_a, None),
            ("b", m.within_b, m.within_b_rules, m.cell_b, None),
        )
        for where, level, rules, b, step in sides:
            if level is None:
                continue
            finding = m.finding if (m.finding_in or "across") == where else None
            pairs[names[where]].append(
                PairResult(
                    dimension=names[where],
                    config_id=out.config_id,
                    a=m.cell_a if where != "b" else m.cell_b,
                    b=b,
                    level=level,
                    first_divergence=step,
                    finding=finding,
                    rules=dict(rules),
                )
            )
    return {name: summarize_pairs(ps) for name, ps in pairs.items() if ps}


def judge_outcome(out: ConfigOutcome, result: CrossRunResult) -> Judgement:
    """Run B's executions of a configuration judged against run A's by the one judgement, with the
    validator the configuration resolved. Across the runs the honest source is ``isa`` when the
    two sides ran other kernel classes; otherwise, and within each side, no calibrated source is
    needed (the sides ran the same kernels)."""
    validator = NamedValidator.model_validate(out.validator) if out.validator else None
    policy = ConfigPolicy(validator, Thresholds.model_validate(result.thresholds), out.out_of_scope)
    classes = [set(v) for v in out.kernel_classes.values()]
    other_kernels = len(classes) == 2 and classes[0] != classes[1]
    compared = outcome_comparisons(out, result)
    sources = {name: ("isa" if name == ACROSS and other_kernels else None) for name in compared}
    return judge(compared, policy, sources)
