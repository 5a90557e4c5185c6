"""The GPU proof (issue #23): the Python half of ``scripts/gpu_proof.sh``.

Why a prepared script: a GPU machine is lent now and then, for minutes, bare each time, and
nothing outside it can be reached from it. Everything that runs there is built and tested on
a CPU first; the script runs it in one call and writes every result under ``$OUT``.

Subcommands (``python -m harness.workflows.gpu_proof ...``):

  check          print why this machine cannot run the proof (no torch, no CUDA) and exit 2,
                 or print nothing and exit 0. Imports torch only: it runs before any wheel is
                 installed, so this module's top level imports nothing but the standard library.
  preflight      write ``env.json`` (device, driver, CUDA, torch and library versions, what
                 nvidia-smi says) and build the tiny models.
  all-devices    run one tiny GPT-2 cell on ``device = "all"`` (every CUDA device and the CPU,
                 one worker per device side by side) and keep the run.
  summary        read everything the steps left in the work folder and write ``summary.md``
                 and ``summary.json``: per configuration of the smoke matrix the flags its
                 records say were in force, CUDA peak memory, latency and which comparisons
                 are bitwise (repeat, process, batch, load), TF32's and the profile's effect,
                 the two certificates, the overhead figures, the steps' outcomes. It reports
                 what the records hold and nothing else: a missing step is named as missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from harness.vocabulary import CONFIG_AXES

ROOT = Path(__file__).resolve().parents[2]
SMOKE_MATRIX = ROOT / "matrices" / "gpu-smoke.toml"
CERT_MATRIX = ROOT / "matrices" / "gpu-cert.toml"
# what the determinism profile and the TF32 axis set, as each record reads them back
FLAG_KEYS = (
    "deterministic_algorithms",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "cuda_matmul_allow_tf32",
    "cudnn_allow_tf32",
    "float32_matmul_precision",
    "cuda_matmul_fp16_reduced_precision",
    "cuda_matmul_bf16_reduced_precision",
)
ENV_KEYS = ("CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE")
DIMENSIONS = ("repeat", "process", "batch", "load")
# issue #23 quotes these; they are the publishers' figures, not measured here
PUBLISHED_COSTS = (
    ("SGLang deterministic mode", "34%"),
    ("Thinking Machines batch-invariant kernels", "61.5%"),
    ("EigenAI", "under 2%"),
)
NOT_COVERED = (
    "Ray tasks with num_gpus=1 (--executor ray): Ray's wheel (about 79 MB) is larger than the 64 MiB "
    "a device call may carry, and nothing can be fetched there; covered on the CPU by the scheduling "
    "tests only",
)


# --- check ---------------------------------------------------------------------------------------


def cuda_problem() -> str | None:
    """Why this machine cannot run the GPU proof (None when it can): one line."""
    try:
        import torch
    except Exception as err:
        return f"torch is not importable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except Exception as err:
        return f"torch {torch.__version__} cannot ask for CUDA devices ({type(err).__name__}: {err})"
    if not available or count < 1:
        build = f"CUDA build {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"no CUDA device: torch {torch.__version__} ({build}) says torch.cuda.is_available() is False"
    return None


# --- preflight -----------------------------------------------------------------------------------


def _smi() -> list[str]:
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return [f"nvidia-smi failed: {err}"]
    return [line.strip() for line in (out.stdout or out.stderr).splitlines() if line.strip()][:8]


def environment(device: str = "cuda:0") -> dict[str, Any]:
    """The machine as the proof saw it (read, never assumed)."""
    import platform
    from importlib import metadata

    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nvidia_smi": _smi(),
        "libraries": {},
    }
    for name in (
        "transformers",
        "diffusers",
        "bitsandbytes",
        "accelerate",
        "tokenizers",
        "safetensors",
        "numpy",
        "pydantic",
        "pydantic-core",
        "huggingface-hub",
        "typing-extensions",
    ):
        try:
            env["libraries"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env["libraries"][name] = None
    from harness.execution.env import _nvidia_driver

    env["driver"] = _nvidia_driver()
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        props = torch.cuda.get_device_properties(index)
        env.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_count=torch.cuda.device_count(),
            capability=list(torch.cuda.get_device_capability(index)),
            gpu_memory_bytes=int(props.total_memory),
            multiprocessors=getattr(props, "multi_processor_count", None),
        )
    try:
        import bitsandbytes

        env["bitsandbytes_import"] = f"ok ({bitsandbytes.__version__})"
    except Exception as err:
        env["bitsandbytes_import"] = f"failed: {type(err).__name__}: {err}"[:300]
        return env
    if device.startswith("cuda") and torch.cuda.is_available():
        try:  # its CUDA library really loads and runs (not the CPU fallback)
            import bitsandbytes.functional as bnbf

            w = torch.randn(64, 64, device=device, dtype=torch.float16)
            q, state = bnbf.quantize_4bit(w)
            worst = float((bnbf.dequantize_4bit(q, state) - w).abs().max())
            env["bitsandbytes_cuda"] = f"ok: 4-bit round trip on {device}, max abs error {worst:.3g}"
        except Exception as err:
            env["bitsandbytes_cuda"] = f"failed: {type(err).__name__}: {err}"[:300]
    return env


def preflight(work: Path, device: str) -> int:
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    from harness.models.tiny import TINY_NAMES, tiny_info

    env["tiny_models"] = {name: tiny_info(name)["weights_sha256"] for name in TINY_NAMES}
    env["preflight_s"] = round(time.perf_counter() - t0, 3)
    (work / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    for key in ("gpu", "driver", "cuda_runtime", "torch", "bitsandbytes_import", "bitsandbytes_cuda"):
        print(f"{key}: {env.get(key)}")
    print(f"libraries: {env['libraries']}")
    print(f"tiny models: {env['tiny_models']}")
    return 0


# --- device = "all" -----------------------------------------------------------------------------


def all_devices_doc() -> dict[str, Any]:
    """One greedy tiny GPT-2 cell on every device (``all``): a worker per CUDA device and one on
    the CPU, side by side."""
    import tomllib

    doc = tomllib.loads(CERT_MATRIX.read_text())
    entry = next(t for t in doc["tasks"] if t["name"] == "gpt-greedy")
    entry = {k: v for k, v in entry.items() if k != "axes"}
    return {
        **doc,
        "name": "gpu-all-devices",
        "description": "device = all: one worker per device, side by side",
        "repeats": 1,
        "workers": 1,
        "tasks": [entry],
        "axes": {**doc["axes"], "device": ["all"]},
    }


def all_devices(work: Path) -> int:
    from harness.execution.runner import run_matrix
    from harness.spec.matrix import matrix_from_doc

    out = work / "all-devices"
    matrix = matrix_from_doc(all_devices_doc(), CERT_MATRIX)
    summary = run_matrix(matrix, out, progress=False, reports_root=work)
    print(f"device all: {summary.executed} executed, {summary.statuses}")
    return 0


# --- summary: reading --------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue  # a torn last line (a step cut at its limit)
        if isinstance(value, dict):
            out.append(value)
    return out


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _flags(record: dict[str, Any]) -> dict[str, Any]:
    det = record.get("determinism") or {}
    flags = {k: det.get(k) for k in FLAG_KEYS if k in det}
    env = det.get("env") or {}
    flags.update({k: env.get(k) for k in ENV_KEYS})  # None: not set
    return flags


def _flags_text(flags: dict[str, Any]) -> str:
    short = {
        "deterministic_algorithms": "det_algos",
        "cudnn_deterministic": "cudnn_det",
        "cudnn_benchmark": "cudnn_bench",
        "cuda_matmul_allow_tf32": "matmul_tf32",
        "cudnn_allow_tf32": "cudnn_tf32",
        "float32_matmul_precision": "fp32_prec",
        "cuda_matmul_fp16_reduced_precision": "fp16_reduced",
        "cuda_matmul_bf16_reduced_precision": "bf16_reduced",
    }
    return ", ".join(f"{short.get(k, k)}={'unset' if v is None else v}" for k, v in flags.items())


def _latency(r: dict[str, Any]) -> float | None:
    t = r.get("timings") or {}
    if "total_s" not in t:
        return None
    return float(t["total_s"]) - float(t.get("load_s") or 0.0)


def _axes(r: dict[str, Any]) -> dict[str, Any]:
    return r.get("axes") or {}


def _same(records: list[dict[str, Any]]) -> bool:
    return len({json.dumps(r.get("digests") or {}, sort_keys=True) for r in records}) == 1


def _pairs(groups: dict[Any, list[dict[str, Any]]]) -> tuple[int, int]:
    """(groups whose records all have equal digests, groups with at least two records)."""
    judged = [g for g in groups.values() if len(g) > 1]
    return sum(_same(g) for g in judged), len(judged)


def _key(r: dict[str, Any], *drop: str) -> str:
    axes = {k: v for k, v in _axes(r).items() if k not in drop}
    return json.dumps({"task": r.get("task_name"), **axes}, sort_keys=True)


def bitwise_dimensions(ok: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dimension, how many comparisons had every digest equal, from the records alone.
    repeat: the repeats of one worker; process: each worker's first repeat across workers;
    batch: batch 2 against batch 1; load: cold against warm (same worker and repeat)."""
    groups: dict[str, dict[Any, list[dict[str, Any]]]] = {d: defaultdict(list) for d in DIMENSIONS}
    for r in ok:
        a = _axes(r)
        groups["repeat"][(r.get("spec_hash"), a.get("worker"))].append(r)
        if a.get("repeat") == 0:
            groups["process"][r.get("spec_hash")].append(r)
        if a.get("batch_size") in (1, 2) and a.get("load") == "warm":
            groups["batch"][_key(r, "batch_size")].append(r)
        if a.get("batch_size") == 1:
            groups["load"][_key(r, "load")].append(r)
    out: dict[str, dict[str, Any]] = {}
    for dim in DIMENSIONS:
        if dim == "batch":  # only groups that hold both sizes are comparisons
            grp = {k: g for k, g in groups[dim].items() if {_axes(x).get("batch_size") for x in g} == {1, 2}}
        elif dim == "load":
            grp = {k: g for k, g in groups[dim].items() if {_axes(x).get("load") for x in g} == {"cold", "warm"}}
        else:
            grp = groups[dim]
        equal, judged = _pairs(grp)
        out[dim] = {"bitwise": None if not judged else equal == judged, "equal": equal, "compared": judged}
    return out


def _config_axes(records: list[dict[str, Any]]) -> dict[str, Any]:
    a = _axes(records[0])
    return {k: a.get(k) for k in CONFIG_AXES}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def smoke_summary(run_dir: Path) -> dict[str, Any]:
    records = read_jsonl(run_dir / "results.jsonl")
    report = read_json(run_dir / "report.json") or {}
    levels = {c.get("config_id"): c for c in report.get("configs", []) if isinstance(c, dict)}
    manifest = read_json(run_dir / "manifest.json") or {}
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "records": len(records),
        "statuses": dict(Counter(r.get("status") for r in records)),
        "manifest_status": manifest.get("status"),
        "report": bool(report),
        "reasons": [
            f"{n} x {reason}"
            for reason, n in Counter(r.get("reason") for r in records if r.get("status") != "ok").most_common(12)
        ],
        "configs": [],
    }
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_config[r.get("config_id", "?")].append(r)
    for config_id in sorted(by_config):
        rs = by_config[config_id]
        ok = [r for r in rs if r.get("status") == "ok"]
        flag_sets = Counter(json.dumps(_flags(r)) for r in ok)  # in FLAG_KEYS order
        peak = [int(r["peak_memory_bytes"]) for r in ok if r.get("peak_memory_bytes") is not None]
        warm = [x for x in (_latency(r) for r in ok if not (r.get("timings") or {}).get("load_s")) if x is not None]
        anyl = [x for x in (_latency(r) for r in ok) if x is not None]
        loads = [float(r["timings"]["load_s"]) for r in ok if (r.get("timings") or {}).get("load_s")]
        by_batch: dict[int, list[float]] = defaultdict(list)
        for r in ok:
            lat = _latency(r)
            if lat is not None and not (r.get("timings") or {}).get("load_s"):
                by_batch[int(_axes(r).get("batch_size", 1))].append(lat)
        quant = next(
            (
                (r.get("model_meta") or {}).get("quantization")
                for r in ok
                if ((r.get("model_meta") or {}).get("quantization") or {}).get("bits")
            ),
            None,
        )
        rep = levels.get(config_id) or {}
        entry = {
            "config_id": config_id,
            "kind": rs[0].get("kind"),
            **_config_axes(rs),
            "statuses": dict(Counter(r.get("status") for r in rs)),
            "flags": [{"flags": json.loads(k), "records": n} for k, n in flag_sets.most_common()],
            "peak_memory_bytes": max(peak) if peak else None,
            "memory_kind": next((r.get("memory_kind") for r in ok if r.get("memory_kind")), None),
            "latency_s_median": _median(warm) if warm else _median(anyl),
            "latency_s_by_batch": {str(b): _median(v) for b, v in sorted(by_batch.items())},
            "load_s_median": _median(loads),
            "quantized_layers": None if not quant else f"{quant.get('quantized_layers')}/{quant.get('linear_layers')}",
            "bitwise": bitwise_dimensions(ok),
            "verdict": rep.get("verdict"),
            "levels": {
                d: (rep.get("dimensions") or {}).get(d, {}).get("worst")
                for d in DIMENSIONS
                if (rep.get("dimensions") or {}).get(d)
            },
            "nondeterministic_warnings": sorted({w for r in ok for w in r.get("nondeterministic_warnings") or []})[:3],
            "reasons": sorted({str(r["reason"]) for r in rs if r.get("status") != "ok" and r.get("reason")})[:3],
        }
        out["configs"].append(entry)
    out["tf32_effect"] = _effect(records, "tf32", "off", "on")
    out["profile_effect"] = _effect(records, "profile", "on", "off")
    return out


def _effect(records: list[dict[str, Any]], axis: str, base: str, other: str) -> list[dict[str, Any]]:
    """Cells equal in everything but ``axis``: are the outputs equal, and what does ``other``
    cost against ``base`` (median latency ratio of warm executions)?"""
    ok = [r for r in records if r.get("status") == "ok"]
    pairs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        value = _axes(r).get(axis)
        if value in (base, other):
            pairs[_key(r, axis)][value].append(r)
    rows: dict[str, dict[str, Any]] = {}
    for sides in pairs.values():
        if not sides.get(base) or not sides.get(other):
            continue
        a, b = sides[base][0], sides[other][0]
        config = (b.get("config_id") if axis == "tf32" else a.get("config_id")) or "?"
        row = rows.setdefault(config, {"config_id": config, "compared": 0, "equal": 0, "base_s": [], "other_s": []})
        row["compared"] += 1
        row["equal"] += int((a.get("digests") or {}) == (b.get("digests") or {}))
        la, lb = _latency(a), _latency(b)
        if (
            la is not None
            and lb is not None
            and not (a.get("timings") or {}).get("load_s")
            and not (b.get("timings") or {}).get("load_s")
        ):
            row["base_s"].append(la)
            row["other_s"].append(lb)
    out = []
    for row in rows.values():
        base_s, other_s = _median(row.pop("base_s")), _median(row.pop("other_s"))
        row[f"{axis}_{base}_s"], row[f"{axis}_{other}_s"] = base_s, other_s
        row["ratio"] = other_s / base_s if base_s and other_s else None
        out.append(row)
    return sorted(out, key=lambda r: r["config_id"])


def certificate_summary(path: Path) -> dict[str, Any] | None:
    cert = read_json(path)
    if not isinstance(cert, dict):
        return None
    return {
        "path": str(path),
        "summary": cert.get("summary"),
        "passed": cert.get("passed"),
        "device": cert.get("device"),
        "reference_devices": cert.get("reference_devices"),
        "match": cert.get("match"),
        "environment_differs": cert.get("environment_differs") or [],
        "configs": [
            {k: c.get(k) for k in ("config_id", "verdict", "worst", "first_divergence", "reason")}
            for c in cert.get("configs") or []
        ],
        "not_certified": (cert.get("not_certified") or [])[:10],
    }


def calibration_summary(work: Path) -> dict[str, Any] | None:
    """What ``harness calibrate`` made of the GPU run against the CPU reference: each entry's scope
    and rates, or the one line it refused with (None: the step did not run)."""
    from harness.spec.calibration import CalibrationError, load_calibration

    path, log = work / "calibration-device.json", work / "calibration.log"
    if path.is_file():
        try:
            cal = load_calibration(path)
        except CalibrationError as err:
            return {"refused": str(err)}
        return {
            "made_by": cal.made_by,
            "entries": [
                {
                    "config": f"{e.scope.kind} {e.scope.model} {e.scope.dtype}"
                    + (f" {e.scope.quantize_bits}-bit" if e.scope.quantize_bits else ""),
                    "sources": list(e.scope.sources),
                    "kernel_classes": list(e.scope.kernel_classes),
                    "gpus": list(e.scope.gpus or []),
                    "bounds": [e.waveform_max_abs, e.waveform_rel_l2],
                    "false_reject": f"{e.false_reject.errors}/{e.false_reject.pairs}",
                    "false_accept": f"{e.false_accept.errors}/{e.false_accept.pairs}",
                    "notes": list(e.notes),
                }
                for e in cal.entries
            ],
        }
    if log.is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return {"refused": lines[-1] if lines else "no output"}
    return None


def all_devices_summary(run_dir: Path) -> dict[str, Any] | None:
    manifest = read_json(run_dir / "manifest.json")
    if not isinstance(manifest, dict):
        return None
    records = read_jsonl(run_dir / "results.jsonl")
    execution = (manifest.get("execution") or [{}])[-1]
    return {
        "devices": manifest.get("devices"),
        "jobs": execution.get("jobs"),
        "max_concurrent_workers": execution.get("max_concurrent_workers"),
        "records": [
            {
                "device": _axes(r).get("device"),
                "status": r.get("status"),
                "reason": r.get("reason"),
                "worker_pid": r.get("worker_pid"),
            }
            for r in records
        ],
    }


def summarize(work: Path) -> dict[str, Any]:
    steps = read_jsonl(work / "steps.jsonl")
    doc: dict[str, Any] = {
        "what": "issue #23: the harness's CUDA paths on one GPU (scripts/gpu_proof.sh)",
        "written_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rehearsal": os.environ.get("GPU_PROOF_REHEARSE") == "1" or (work / "REHEARSAL").exists(),
        "environment": read_json(work / "env.json"),
        "steps": steps,
        "wall_s": round(sum(float(s.get("wall_s") or 0) for s in steps if not s.get("background")), 1),
        "smoke": smoke_summary(work / "smoke") if (work / "smoke").exists() else None,
        "certificates": {
            name: certificate_summary(work / name / "certificate.json") for name in ("cert-gpu", "cert-back")
        },
        "calibration": calibration_summary(work),
        "overhead": read_json(work / "overhead.json"),
        "sampling": read_json(work / "sampling.json"),
        "all_devices": all_devices_summary(work / "all-devices"),
        "published_costs": [{"what": w, "cost": c} for w, c in PUBLISHED_COSTS],
        "not_covered": list(NOT_COVERED),
    }
    return doc


# --- summary: writing --------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.1f} ms"


def _bit(d: dict[str, Any]) -> str:
    if d.get("bitwise") is None:
        return "-"
    return ("yes" if d["bitwise"] else "NO") + f" ({d['equal']}/{d['compared']})"


def render(doc: dict[str, Any]) -> str:
    from harness.report.run import md_table  # the one Markdown table (imported when rendering)

    lines = ["# GPU proof (issue #23)", ""]
    if doc.get("rehearsal"):
        lines += [
            "> **REHEARSAL on a CPU** (GPU_PROOF_REHEARSE=1): the script's logic only; no figure here is a GPU figure.",
            "",
        ]
    env = doc.get("environment") or {}
    lines += [
        "## Device",
        "",
        f"- GPU: {env.get('gpu', '-')} (capability {env.get('capability', '-')}, "
        f"{_mib(env.get('gpu_memory_bytes'))}, {env.get('multiprocessors', '-')} SMs)",
        f"- driver {env.get('driver', '-')}; CUDA runtime {env.get('cuda_runtime', '-')}; "
        f"cuDNN {env.get('cudnn', '-')}; "
        f"torch {env.get('torch', '-')}; python {env.get('python', '-')}",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in (env.get('libraries') or {}).items())}",
        f"- bitsandbytes: {env.get('bitsandbytes_import', '-')}; CUDA: {env.get('bitsandbytes_cuda', '-')}",
        f"- nvidia-smi: {'; '.join(env.get('nvidia_smi') or []) or '-'}",
        "",
    ]
    steps = [
        [
            str(s.get("name")),
            s.get("outcome") or ("ok" if s.get("rc") == 0 else f"exit {s.get('rc')}"),
            f"{s.get('wall_s', '-')} s",
            f"{s.get('limit_s', '-')} s",
        ]
        for s in doc.get("steps") or []
    ]
    lines += ["## Steps", "", *md_table((["step", "outcome", "wall", "limit"], steps), empty="")[:-1]]
    lines += [
        "",
        f"Total wall time of the steps: {doc.get('wall_s')} s (steps run beside the others not added). "
        "`harness run` exits 1 when a gate fails and `harness certify` when a configuration is not bitwise: "
        "their results are below all the same.",
        "",
    ]
    smoke = doc.get("smoke")
    lines += ["## Smoke matrix (matrices/gpu-smoke.toml)", ""]
    if not smoke:
        lines += ["Not run.", ""]
    else:
        lines += [
            f"{smoke['records']} records: {smoke['statuses']}; manifest {smoke.get('manifest_status')}"
            + ("" if smoke.get("report") else " (no report.json: levels from the digests only)"),
            "",
        ]
        if smoke.get("reasons"):
            lines += ["Not ok:", *[f"- {r}" for r in smoke["reasons"]], ""]
        lines += [
            "Bitwise = every digest equal (yes/NO, equal/compared); the report's worst level beside it.",
            "",
        ]
        head = ["configuration", "ok", "verdict", "repeat", "process", "batch", "load", "peak CUDA memory"]
        head += ["latency b1 / b2", "load", "quantized"]
        rows = []
        for c in smoke["configs"]:
            b = c["bitwise"]
            lv = c.get("levels") or {}

            def cell(d: str, b: dict[str, Any] = b, lv: dict[str, Any] = lv) -> str:
                return _bit(b[d]) + (f" [{lv[d]}]" if lv.get(d) else "")

            lat = c.get("latency_s_by_batch") or {}
            rows.append(
                [
                    c["config_id"],
                    f"{c['statuses'].get('ok', 0)}/{sum(c['statuses'].values())}",
                    c.get("verdict") or "-",
                    *(cell(d) for d in ("repeat", "process", "batch", "load")),
                    _mib(c.get("peak_memory_bytes")),
                    f"{_ms(lat.get('1'))} / {_ms(lat.get('2'))}",
                    _ms(c.get("load_s_median")),
                    str(c.get("quantized_layers") or "-"),
                ]
            )
        lines += md_table((head, rows), empty="")[:-1]
        lines += ["", "### Flags in force (as each record read them back)", ""]
        for c in smoke["configs"]:
            for f in c["flags"]:
                lines.append(f"- {c['config_id']} ({f['records']} records): {_flags_text(f['flags'])}")
            for w in c.get("nondeterministic_warnings") or []:
                lines.append(f"  - non-determinism warning: {w[:200]}")
        for title, key, _axis in (
            ("TF32 on against off", "tf32_effect", "tf32"),
            ("Profile off against on", "profile_effect", "profile"),
        ):
            effect = [
                [
                    row["config_id"],
                    f"{row['equal']}/{row['compared']}",
                    "-" if row.get("ratio") is None else f"{row['ratio']:.3f}",
                ]
                for row in smoke.get(key) or []
            ]
            lines += ["", f"### {title}", ""]
            lines += md_table((["configuration", "outputs equal", "latency ratio"], effect), empty="")[:-1]
        lines.append("")
    lines += ["## GPU against CPU (harness certify --device)", ""]
    for name, title in (
        ("cert-gpu", "CPU reference certified on the GPU"),
        ("cert-back", "GPU run certified back on the CPU"),
    ):
        cert = (doc.get("certificates") or {}).get(name)
        lines += [f"### {title}", ""]
        if not cert:
            lines += ["Not run.", ""]
            continue
        lines += [
            f"**{cert['summary']}** (matched by `{cert.get('match')}`; reference on "
            f"{', '.join(cert.get('reference_devices') or []) or '-'}, here on {cert.get('device')})",
            "",
            f"Environment fields that differ: {', '.join(cert['environment_differs']) or 'none'}",
            "",
        ]
        rows = [
            [
                c["config_id"],
                c["verdict"],
                c.get("worst") or "-",
                "-" if c.get("first_divergence") is None else str(c["first_divergence"]),
                str(c.get("reason")),
            ]
            for c in cert["configs"]
        ]
        lines += md_table((["configuration", "verdict", "worst", "first divergent step", "reason"], rows), empty="")[
            :-1
        ]
        lines += [*[f"- not certified: {x}" for x in cert.get("not_certified") or []], ""]
    lines += ["## The GPU calibrated against the CPU reference (harness calibrate)", ""]
    cal = doc.get("calibration")
    if not cal:
        lines += ["Not run.", ""]
    elif "refused" in cal:
        lines += [f"Refused: {cal['refused']}", ""]
    else:
        rows = [
            [
                e["config"],
                ", ".join(e["sources"]) or "-",
                f"{e['bounds'][0]:.3g} / {e['bounds'][1]:.3g}",
                e["false_reject"],
                e["false_accept"],
                "; ".join(e["gpus"]) or "CPU only",
                ", ".join(e["kernel_classes"]),
            ]
            for e in cal["entries"]
        ]
        header = ["configuration", "sources", "bounds max abs / rel-L2", "FRR", "FAR", "GPUs", "kernel classes"]
        lines += [cal["made_by"], "", *md_table((header, rows), empty="")[:-1], ""]
        lines += [f"- {e['config']}: {n}" for e in cal["entries"] for n in e["notes"]]
        lines += [""]
    lines += ["## Overhead and the determinism profile's cost (scripts/overhead.py)", ""]
    ov = doc.get("overhead")
    if not ov:
        lines += ["Not run.", ""]
    else:
        rounds = ", ".join(f"{x:+.1f}%" for x in ov.get("profile_cost_rounds_pct") or [])
        lines += [
            f"- device {ov.get('device')}: {ov.get('cells')} cells of {ov.get('max_new_tokens')} tokens; "
            f"bare == harness outputs {ov.get('bare_equals_harness')}",
            f"- ratio {ov.get('ratio', float('nan')):.2f} (harness / bare transformers, worker start-up included)",
            f"- determinism profile cost {ov.get('profile_cost_pct', float('nan')):+.1f}% wall "
            f"(generation only {ov.get('profile_cost_generation_pct', float('nan')):+.1f}%); interleaved rounds "
            f"(A/B/A/B): {rounds or '-'}",
            "- published costs of deterministic inference, for comparison (not measured here): "
            + "; ".join(f"{p['what']} {p['cost']}" for p in doc.get("published_costs") or []),
            "",
        ]
    lines += ["## Can the device's sampling be replayed?", ""]
    sampling = doc.get("sampling")
    if not sampling:
        lines += ["Not run.", ""]
    else:
        from harness.workflows.gpu_sampling import render as render_sampling

        lines += [*render_sampling(sampling), ""]
    lines += ['## device = "all"', ""]
    ad = doc.get("all_devices")
    if not ad:
        lines += ["Not run.", ""]
    else:
        lines += [
            f"devices {ad.get('devices')}; {ad.get('jobs')} jobs, at most {ad.get('max_concurrent_workers')} "
            f"workers at once",
            *[
                f"- {r['device']}: {r['status']}"
                + (f" ({r['reason']})" if r.get("reason") else "")
                + f", worker pid {r.get('worker_pid')}"
                for r in ad.get("records") or []
            ],
            "",
        ]
    lines += ["## Not covered", "", *[f"- {x}" for x in doc.get("not_covered") or []], ""]
    return "\n".join(lines)


def write_summary(work: Path, out: Path) -> dict[str, Any]:
    doc = summarize(work)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(render(doc))
    return doc


# --- the command -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.workflows.gpu_proof",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="exit 2 with one line when this machine cannot run the proof")
    p = sub.add_parser("preflight", help="write env.json and build the tiny models")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--device", default="cuda:0")
    p = sub.add_parser("all-devices", help='run one tiny GPT-2 cell on device = "all"')
    p.add_argument("--work", type=Path, required=True)
    p = sub.add_parser("summary", help="write summary.md and summary.json")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "check":
        why = cuda_problem()
        if why:
            print(why)
            return 2
        return 0
    if args.command == "preflight":
        return preflight(args.work, args.device)
    if args.command == "all-devices":
        return all_devices(args.work)
    doc = write_summary(args.work, args.out)
    print(f"wrote {args.out / 'summary.md'} and {args.out / 'summary.json'}")
    smoke = doc.get("smoke") or {}
    steps = ", ".join(f"{st.get('name')}={st.get('outcome')}" for st in doc.get("steps") or [])
    print(f"smoke: {smoke.get('statuses')}; steps: {steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
