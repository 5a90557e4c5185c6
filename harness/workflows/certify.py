"""Hardware certification: does this machine reproduce a reference machine's outputs?

``harness certify --reference BUNDLE``: verify the reference bundle (a changed byte refuses
it), rebuild the reference's matrix from its manifest (the manifest holds the resolved task
documents, so no task file is needed), re-run its cells here with the runner, compare cell
by cell with harness.analysis.crossrun and write ``certificate.json`` + ``certificate.md`` into the
new run directory. Per configuration:
  - ``pass``: every compared cell bitwise identical to the reference;
  - ``pass_with_tolerance``: not bitwise, but every pair (across the machines and within
    each) passes the validator the reference matrix names for the kind, whose measured false
    accept is <= 1%;
  - ``fail``: divergent, a finding (equal codes with a far waveform, equal response with
    other token ids), no such validator, or a cell failed, was skipped here, or has no partner.
Each configuration also gets the network's view (harness.compare.agreement): for a network half
like each machine, P(task accepted), P(task aborted) and the expected share of honest
executions invalidated, under the kind's network rule; and its pool key (GPU model, VRAM,
runner version, platform, dtype, quantize_bits) as the network pools nodes.
Exit code 0 only when every configuration passes bitwise (and at least one was compared).

Another device: ``--device DEV`` (``cuda:0``, ``cpu``) re-runs the reference's cells on DEV and
matches them ignoring the device: a CPU reference certified on a GPU, a GPU run certified back
on a CPU. Not an emulation: the certificate's ``device`` field names it.

Emulation: ``--threads N`` overrides the matrix's threads axis and matches cells ignoring
threads. On one machine a different CPU thread count changes the order of float reductions
the way different hardware does, so it stands in for "another device"; the certificate says
so in its ``emulation`` field. It is an emulation, not a second machine.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from harness.analysis.certificate import CERTIFICATE_SCHEMA_VERSION, Certificate, ConfigCertificate
from harness.analysis.crossrun import (
    ConfigOutcome,
    CrossRunResult,
    compare_runs,
    consensus_outcomes,
    judge_outcome,
)
from harness.compare.agreement import simulate
from harness.compare.levels import level_rank, worst_level
from harness.errors import WorkflowError
from harness.report.certificate import render_certificate
from harness.spec.matrix import MAX_CELLS, Matrix, MatrixError, expand, load_matrix, matrix_from_doc
from harness.store.bundle import open_bundle
from harness.store.manifest import Manifest
from harness.store.run import StoreError, atomic_write_bytes, atomic_write_json, new_run_id
from harness.vocabulary import CERTIFICATE_VERDICT, CERTIFICATE_VERDICTS, CertificateVerdict
from harness.workflows.whitelist import normalize_gpu_name

CERTIFICATE_JSON = "certificate.json"
CERTIFICATE_MD = "certificate.md"
EMULATION_NOTE = (
    "emulated hardware: the threads axis was overridden on the same machine; a different CPU "
    "thread count changes float reduction order as different hardware does"
)
ISA_NOTE = (
    "emulated CPU kind: ATen, oneDNN and oneMKL were capped at the {isa} kernel level ({like}) on the "
    "same machine; other kernels reduce floats in another order, as another CPU kind does"
)


class CertifyError(WorkflowError):
    """The reference or the requested matrix cannot be certified against; one line."""


def parse_certificate(doc: Any, where: str) -> Certificate:
    """A certificate document as ``harness verify`` reads it: a JSON object that validates as a
    ``Certificate`` of a version this harness reads (its signature block aside). An object with
    a valid signature but no certificate inside was reported ``VERIFIED``."""
    from pydantic import ValidationError

    from harness.spec.tasks import first_validation_problem
    from harness.store.files import check_version

    if not isinstance(doc, dict):
        raise CertifyError(f"{where}: not a certificate (a JSON object)")
    try:
        check_version(doc.get("schema_version"), CERTIFICATE_SCHEMA_VERSION, f"{where}: certificate")
    except StoreError as err:
        raise CertifyError(str(err)) from None
    try:
        return Certificate.model_validate({k: v for k, v in doc.items() if k not in ("signature", "signed_by")})
    except ValidationError as err:
        raise CertifyError(f"{where}: not a certificate: {first_validation_problem(err)}") from None


# --- matrices --------------------------------------------------------------------------------------


def inline_doc(matrix: Matrix) -> dict[str, Any]:
    """The matrix as a self-contained document: every task inline (resolved docs)."""
    spec = matrix.spec.model_dump(mode="json")
    tasks = []
    for entry in spec["tasks"]:
        kind, doc = matrix.tasks[entry["name"]]
        tasks.append({**entry, "file": None, "task": copy.deepcopy(doc), "kind": kind})
    spec["tasks"] = tasks
    return spec


def reference_matrix(manifest: Manifest, where: str) -> Matrix:
    """Rebuild the matrix a run was made from, out of its manifest alone."""
    m = manifest.matrix
    if not isinstance(m, dict) or not isinstance(m.get("spec"), dict) or not isinstance(m.get("tasks"), dict):
        raise CertifyError(f"{where}: its manifest holds no matrix to rebuild")
    spec = copy.deepcopy(m["spec"])
    entries = []
    for entry in spec.get("tasks", []):
        resolved = m["tasks"].get(entry.get("name"))
        if not isinstance(resolved, dict) or "task" not in resolved:
            raise CertifyError(f"{where}: its manifest has no resolved task {entry.get('name')!r}")
        entries.append({**entry, "file": None, "task": resolved["task"], "kind": resolved.get("kind")})
    spec["tasks"] = entries
    return _from_doc(spec, where)


def _from_doc(doc: dict[str, Any], where: str) -> Matrix:
    try:
        return matrix_from_doc(doc, None)
    except MatrixError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CertifyError(f"{where}: cannot rebuild its matrix ({first})") from None


def _replace_all_devices(doc: dict[str, Any], devices: list[str]) -> None:
    """``device = "all"`` means the devices of the machine that ran it: pin the reference's."""

    def fix(values: Any) -> Any:
        if isinstance(values, list) and "all" in values:
            out: list[str] = []
            for d in values:
                for x in devices if d == "all" else [d]:
                    if x not in out:
                        out.append(x)
            return out
        return values

    doc.setdefault("axes", {})["device"] = fix(doc.get("axes", {}).get("device", ["cpu"]))
    for entry in doc.get("tasks", []):
        if "device" in entry.get("axes", {}):
            entry["axes"]["device"] = fix(entry["axes"]["device"])


def override_axis(doc: dict[str, Any], axis: str, value: Any) -> dict[str, Any]:
    """The matrix document with every ``axis`` setting replaced by ``value``; excludes that
    name the axis are dropped (they named values the run no longer has)."""
    doc = copy.deepcopy(doc)
    doc.setdefault("axes", {})[axis] = [value]
    for entry in doc.get("tasks", []):
        if axis in entry.get("axes", {}):
            entry["axes"][axis] = [value]
    for rule in doc.get("include", []):
        if axis in rule:
            rule[axis] = value
    doc["exclude"] = [rule for rule in doc.get("exclude", []) if axis not in rule]
    return doc


def override_threads(doc: dict[str, Any], threads: int) -> dict[str, Any]:
    return override_axis(doc, "threads", threads)


# --- verdicts ---------------------------------------------------------------------------------------


def judge(out: ConfigOutcome, result: CrossRunResult) -> tuple[CertificateVerdict, str, list[str]]:
    """A configuration's certificate verdict: not certified when a cell failed, was skipped or has
    no partner; else the one judgement (harness.analysis.judgement) over the comparison across
    the machines and each side's own repeats, with the validator the configuration resolved
    (rates and bounds from the calibration entry whose scope holds both sides' kernel classes)."""
    issues = (
        [f"reference failed: {x}" for x in out.failed_a]
        + [f"no partner here: {x}" for x in out.unmatched_a]
        + [f"failed here: {x}" for x in out.failed_b]
        + [f"skipped here: {x}" for x in out.skipped_b]
        + [f"not comparable: {x}" for x in out.errors]
    )
    if issues:
        return "fail", f"{len(issues)} cell(s) not certified; first: {issues[0]}", issues
    if not out.matched:
        return "fail", "no cell compared", issues
    j = judge_outcome(out, result)
    return CERTIFICATE_VERDICT.get(j.verdict, "fail"), j.reason, issues


def pool_key(environment: dict[str, Any], dtype: str | None, quantize_bits: int | None) -> dict[str, Any]:
    """The network pools nodes by GPU model, then VRAM; outputs also depend on the runner
    version, the platform and the task's dtype and quantization. A CPU machine's model is its
    processor. The model name is normalised as the relay normalises every GPU name it is given
    (crynux-relay ``models/gpu_name.go``: Go's ``strings.Fields`` joined by one space), so two
    machines whose drivers space a name differently share one pool key, as they share one pool."""
    gpus = environment.get("gpu_names") or []
    mem = environment.get("gpu_memory_bytes") or []
    return {
        "gpu_model": normalize_gpu_name(str(gpus[0]) if gpus else f"cpu: {environment.get('processor')}"),
        "vram_bytes": mem[0] if mem else None,
        "runner_version": (environment.get("libraries") or {}).get("consensus-harness"),
        "platform": environment.get("os"),
        "dtype": dtype,
        "quantize_bits": quantize_bits,
    }


def _config_certificate(out: ConfigOutcome, result: CrossRunResult) -> ConfigCertificate:
    from harness.compare.validators import network_rule

    verdict, reason, issues = judge(out, result)
    pairs = [m for m in result.matches if m.config_a == out.config_id and m.level]
    # every pair kept has a level (m.level filters the uncompared ones out)
    worst = max(pairs, key=lambda m: (level_rank(m.level or ""), -(m.first_divergence or 0)), default=None)
    consensus: dict[str, dict[str, float]] = {}
    rule, label = network_rule(out.kind)
    network = None
    outcomes = consensus_outcomes(result.model_copy(update={"matches": pairs}), ("reference", "candidate"))
    if outcomes:
        names = sorted(set.intersection(*(set(d) for o in outcomes for d in o.values())), key=_rule_order)
        est = simulate(outcomes, {"reference": 0.5, "candidate": 0.5}, names)
        consensus = {
            name: {"p3of3": r.p3of3, "p2of3": r.p2of3, "p_aborted": r.p_aborted, "wrongly_slashed": r.wrongly_slashed}
            for name, r in est.rules.items()
        }
        if rule in est.rules:
            r = est.rules[rule]
            network = {"p_accepted": r.p2of3, "p_aborted": r.p_aborted, "invalidated": r.wrongly_slashed}
    pool = {
        "reference": pool_key(result.a.environment, out.dtype, out.quantize_bits),
        "candidate": pool_key(result.b.environment, out.dtype, out.quantize_bits),
    }
    return ConfigCertificate(
        config_id=out.config_id,
        task=out.task,
        kind=out.kind,
        model=out.model,
        verdict=verdict,
        reason=reason,
        compared=out.matched,
        levels=out.levels,
        worst=worst_level(x for x in (out.worst, out.within_a, out.within_b) if x),
        within_reference=out.within_a,
        within_candidate=out.within_b,
        first_divergence=out.first_divergence[0] if out.first_divergence else None,
        worst_pair=[worst.cell_a, worst.cell_b] if worst else None,
        metrics=worst.metrics if worst else {},
        consensus=consensus,
        network_rule=rule,
        network_label=label,
        network=network,
        findings=dict(out.findings),
        pool=pool,
        issues=issues[:50],
    )


def _rule_order(name: str) -> int:
    from harness.compare.levels import RULE_NAMES

    return RULE_NAMES.index(name) if name in RULE_NAMES else len(RULE_NAMES)


def certificate_from(
    result: CrossRunResult, *, emulation: dict[str, Any] | None = None, not_rerun: list[str] | None = None
) -> Certificate:
    from harness import __version__

    configs, not_certified = [], list(not_rerun or [])
    for out in result.configs:
        only_skipped = out.skipped_a and not (
            out.matched or out.unmatched_a or out.failed_a or out.errors or out.failed_b or out.skipped_b
        )
        if only_skipped:
            not_certified.append(f"{out.config_id}: skipped on the reference machine ({out.skipped_a[0]})")
            continue
        configs.append(_config_certificate(out, result))
    passed = bool(configs) and all(c.verdict == "pass" for c in configs)
    counts = {v: sum(c.verdict == v for c in configs) for v in CERTIFICATE_VERDICTS}
    summary = (
        ("CERTIFIED: " if passed else "NOT CERTIFIED (bitwise): ")
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + f" of {len(configs)} configuration(s)"
    )
    if not configs:
        summary = "NOT CERTIFIED: no configuration could be compared"
    return Certificate(
        harness_version=__version__,
        created_at=time.time(),
        passed=passed,
        summary=summary,
        reference=result.a,
        candidate=result.b,
        emulation=emulation,
        match=result.match,
        thresholds=result.thresholds,
        environment_differs=result.environment_differs,
        groups=result.groups,
        configs=configs,
        not_certified=not_certified,
        unmatched_candidate=result.unmatched_b,
        problems=result.problems,
    )


# --- the command -------------------------------------------------------------------------------------


def certify(
    reference: str | Path,
    *,
    matrix: str | Path | None = None,
    out: str | Path | None = None,
    threads: int | None = None,
    progress: bool = False,
    reports_root: Path = Path("reports"),
    executor: Any = None,
    trusted_keys: set[str] | None = None,
    isa: str | None = None,
    device: str | None = None,
) -> tuple[Certificate, Path]:
    """Re-run the reference's cells here and certify; returns the certificate and run dir.
    ``device``: re-run them on this device instead of the reference's own."""
    from harness.execution.runner import run_matrix
    from harness.spec.matrix import available_devices

    if threads is not None and threads < 1:
        raise CertifyError(f"--threads must be a positive integer, got {threads}")
    if device is not None:
        device = _check_device(device, executor)
    if isa is not None:
        from harness.isa import IsaError, unavailable

        try:
            why = unavailable(isa)
        except IsaError as err:
            raise CertifyError(f"--isa: {err}") from None
        if why:
            raise CertifyError(f"--isa {isa}: {why}")
    from harness.analysis.evidence import gather as check_evidence

    with open_bundle(reference, trusted_keys) as ref:
        where = f"reference {reference}"
        manifest = ref.store.manifest()
        ref_loaded = ref.store.load_records()
        ref_records = ref_loaded.records
        ref_evidence = check_evidence(ref.store, manifest, ref_records, ref_loaded.problems)
        if not ref_evidence.ok:  # an incomplete or broken reference certifies nothing
            raise CertifyError(
                f"{where}: its evidence does not hold ({len(ref_evidence.problems)} problem(s); "
                f"first: {ref_evidence.problems[0]})"
            )
        ref_specs = {r.spec_hash for r in ref_records}
        ref_devices = [str(d) for d in manifest.devices or ["cpu"]]
        max_cells = max(MAX_CELLS, len(ref_records))
        if matrix is None:
            rebuilt = reference_matrix(manifest, where)
            doc = inline_doc(rebuilt)
            _replace_all_devices(doc, ref_devices)
            rebuilt = _from_doc(doc, where)
            cells = expand(rebuilt, ref_devices, max_cells=max_cells)
            lost = sorted(ref_specs - {c.spec_hash for c in cells})
            if lost:
                first = next(r.cell_id for r in ref_records if r.spec_hash == lost[0])
                raise CertifyError(
                    f"{where}: {len(lost)} of its cells do not rebuild with the same spec hash (first: "
                    f"{first}); made by harness {manifest.harness_version}, this is "
                    f"{_version()}: certify with --matrix and the original matrix file"
                )
            expected = ref_specs
        else:
            given = load_matrix(matrix)
            doc = inline_doc(given)
            cells = expand(given, available_devices(), max_cells=max_cells)
            foreign = [c for c in cells if c.spec_hash not in ref_specs]
            if foreign:
                raise CertifyError(
                    f"matrix {matrix}: cell {foreign[0].cell_id} (spec {foreign[0].spec_hash}) is not "
                    f"in the reference run; certify re-runs the reference's cells (a subset is fine)"
                )
            expected = {c.spec_hash for c in cells}
        emulation: dict[str, Any] | None = None
        ignored: list[str] = []
        notes: list[str] = []
        if threads is not None:
            doc = override_threads(doc, threads)
            ignored.append("threads")
            notes.append(EMULATION_NOTE)
        if isa is not None:
            from harness.isa import LEVELS, resolve

            doc = override_axis(doc, "isa", isa)
            ignored.append("isa")
            fixed = resolve(isa) or isa  # below-native: the level it is on this machine
            like = LEVELS[fixed].like if fixed in LEVELS else "the machine as it is"
            named = isa if fixed == isa else f"{isa} ({fixed} here)"
            notes.append(ISA_NOTE.format(isa=named, like=like))
        if ignored:
            emulation = {"threads": threads, "isa": isa, "note": "; ".join(notes)}
        if device is not None:
            doc = override_axis(doc, "device", device)
            ignored.append("device")
        match = f"ignore:{','.join(ignored)}" if ignored else "spec"
        run_as = _from_doc(doc, where)
        run_dir = Path(out) if out else reports_root / "runs" / new_run_id("certify")
        summary = run_matrix(run_as, run_dir, progress=progress, executor=executor, max_cells=max_cells)
        from harness.store.run import RunStore

        result = compare_runs(
            ref, RunStore(summary.run_dir), match=match, labels=("reference", "candidate"), only_a=expected
        )
        not_rerun = sorted({r.config_id for r in ref_records if r.spec_hash not in expected})
        cert = certificate_from(
            result, emulation=emulation, not_rerun=[f"{c}: not re-run (not in --matrix)" for c in not_rerun]
        )
        cert.reference.source = str(reference)
        cert.problems = summary.problems + cert.problems
        run_store = RunStore(summary.run_dir)
        cand = run_store.load_records()
        cand_evidence = check_evidence(run_store, run_store.manifest(), cand.records, cand.problems)
        if not cand_evidence.ok:
            cert.problems += [f"candidate evidence: {p}" for p in cand_evidence.problems]
            cert.passed = False
            cert.summary = f"NOT CERTIFIED (incomplete or broken evidence): {cand_evidence.problems[0]}"
        cert.reference_signed_by = ref.signed_by
        if device is not None:
            cert.device = device
            cert.reference_devices = sorted({r.axes.device for r in ref_records})
    write_certificate(cert, summary.run_dir)
    return cert, summary.run_dir


def _check_device(device: str, executor: Any = None) -> str:
    """``--device``: a device form (cpu, cuda, cuda:N) this machine (or the executor's fleet) has."""
    from harness.spec.matrix import available_devices, device_problem

    problem = device_problem(device, allow_all=False)
    if problem:
        raise CertifyError(f"--device: {problem}")
    device = "cuda:0" if device == "cuda" else device
    have = executor.devices() if executor is not None else (["cpu"] if device == "cpu" else available_devices())
    if device not in have:
        raise CertifyError(f"--device {device}: not available on this machine (devices: {', '.join(have)})")
    return device


def _version() -> str:
    from harness import __version__

    return __version__


def write_certificate(cert: Certificate, run_dir: Path) -> list[Path]:
    json_path, md_path = Path(run_dir) / CERTIFICATE_JSON, Path(run_dir) / CERTIFICATE_MD
    atomic_write_json(json_path, cert.model_dump(mode="json"))
    atomic_write_bytes(md_path, render_certificate(cert).encode())
    return [md_path, json_path]
