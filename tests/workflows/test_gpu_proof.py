"""The GPU proof (issue #23) on a CPU: scripts/gpu_proof.sh refuses to start without CUDA in
one line; the GPU smoke matrix validates, expands as sized and is recorded as skipped here;
the summary writer turns records into the figures docs/gpu.md will quote; the CUDA
paths' CPU-testable logic (device-specific synchronisation, TF32 override, driver version)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.spec.matrix import expand, load_matrix
from harness.workflows import gpu_proof

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_proof.sh"
NO_CUDA = "cuda:0 is not available on this machine"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- the script refuses without CUDA ---------------------------------------------------------------


def _script(tmp_path: Path, python: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_PROOF_")}
    env.update(PYTHON=python, OUT=str(tmp_path / "out"), GPU_PROOF_WORK=str(tmp_path / "work"))
    return subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_script_refuses_without_cuda_in_one_line(tmp_path):
    if _has_cuda():
        pytest.skip("this machine has CUDA")
    proc = _script(tmp_path, sys.executable)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        "gpu_proof: refusing to start: no CUDA device: torch "
    )
    assert "torch.cuda.is_available() is False" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()  # nothing installed or written


@pytest.mark.parametrize(
    "python, reason",
    [
        ("/nonexistent/python3", "/nonexistent/python3 cannot run"),
        ("NO_SITE", "torch is not importable (ModuleNotFoundError: No module named 'torch')"),
    ],
)
def test_script_refuses_without_torch_in_one_line(tmp_path, python, reason):
    if python == "NO_SITE":  # a python that has no torch: site-packages switched off
        python = str(tmp_path / "python-no-site")
        Path(python).write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        os.chmod(python, 0o755)
    proc = _script(tmp_path, python)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"gpu_proof: refusing to start: {reason}")


def _fake_torch(monkeypatch, available: bool, count: int = 1, cuda: str | None = "13.0"):
    fake = SimpleNamespace(
        __version__="9.9.9",
        version=SimpleNamespace(cuda=cuda),
        cuda=SimpleNamespace(is_available=lambda: available, device_count=lambda: count),
    )
    monkeypatch.setitem(sys.modules, "torch", fake)


def test_check_says_why_or_nothing(monkeypatch, capsys):
    _fake_torch(monkeypatch, available=False, cuda=None)
    assert gpu_proof.cuda_problem() == (
        "no CUDA device: torch 9.9.9 (a CPU-only build) says torch.cuda.is_available() is False"
    )
    assert gpu_proof.main(["check"]) == 2 and capsys.readouterr().out.count("\n") == 1
    _fake_torch(monkeypatch, available=False, cuda="13.0")
    assert "(CUDA build 13.0)" in gpu_proof.cuda_problem()
    _fake_torch(monkeypatch, available=True, count=1)
    assert gpu_proof.cuda_problem() is None
    assert gpu_proof.main(["check"]) == 0 and capsys.readouterr().out == ""


# --- the smoke matrix -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke():
    return load_matrix(gpu_proof.SMOKE_MATRIX)


def test_smoke_matrix_expands_to_every_asked_axis_value_sized_to_fit(smoke):
    cells = expand(smoke, ["cpu", "cuda:0"])
    assert {c.skip_reason for c in cells} <= {None, "bitsandbytes is not installed"}
    axes = lambda name: {getattr(c.axes, name) for c in cells}
    assert axes("device") == {"cuda:0"}
    assert axes("dtype") == {"float32", "float16", "bfloat16"} and axes("quantize_bits") == {None, 8, 4}
    assert axes("tf32") == {"off", "on"} and axes("profile") == {"on", "off"}
    assert axes("batch_size") == {1, 2} and axes("load") == {"cold", "warm"}
    assert axes("worker") == {0, 1} and axes("repeat") == {0, 1}
    assert {c.kind for c in cells} == {"audio", "gpt", "audioldm"}
    assert {c.task_doc["model"] for c in cells} == {"tiny:musicgen", "tiny:gpt2", "tiny:audioldm"}
    # AudioLDM quantized (CUDA only) is among them
    assert any(c.kind == "audioldm" and c.axes.quantize_bits == 4 for c in cells)
    # sized for one H200 within the script's budget: 54 specs, 216 executions, 6 worker starts
    assert len(cells) == 216 and len({c.spec_hash for c in cells}) == 54
    assert len({(*c.group_key, c.axes.worker) for c in cells}) == 6
    # TF32 on only where it means something: float32, unquantized
    assert all(c.axes.dtype == "float32" and c.axes.quantize_bits is None for c in cells if c.axes.tf32 == "on")


def test_smoke_matrix_validates_and_lints_for_cuda(smoke):
    from harness.cli.main import main as cli_main
    from harness.spec.lint import lint_task
    from harness.spec.tasks import parse_task

    for kind, doc in smoke.tasks.values():
        warnings = [str(w) for w in lint_task(parse_task(doc, kind), "cuda:0")]
        assert not any("quantization-device" in w for w in warnings), warnings
    assert (
        cli_main(["validate", str(ROOT / "matrices" / "tasks" / "tiny-audioldm-lounge.json"), "--device", "cuda:0"])
        == 0
    )
    for path in (gpu_proof.SMOKE_MATRIX, gpu_proof.CERT_MATRIX):
        assert cli_main(["expand", str(path), "--json"]) == 0


def test_smoke_cells_are_skipped_on_a_cpu_with_the_reason(smoke):
    cells = expand(smoke, ["cpu"])
    assert len(cells) == 216 and {c.skip_reason for c in cells} == {NO_CUDA}


@pytest.mark.slow
def test_smoke_run_on_a_cpu_records_every_cell_skipped_and_summarises(smoke, tmp_path):
    if _has_cuda():
        pytest.skip("this machine has CUDA")
    from harness.execution.runner import run_matrix

    summary = run_matrix(smoke, tmp_path / "smoke", progress=False)
    assert summary.statuses == {"skipped": 216}
    doc = gpu_proof.smoke_summary(tmp_path / "smoke")
    assert doc["statuses"] == {"skipped": 216} and doc["reasons"] == [f"216 x {NO_CUDA}"]
    assert len(doc["configs"]) == 24 and all(set(c["statuses"]) == {"skipped"} for c in doc["configs"])
    assert sum(c["statuses"]["skipped"] for c in doc["configs"]) == 216
    assert all(c["bitwise"]["repeat"]["bitwise"] is None for c in doc["configs"])  # nothing compared


def test_cert_matrix_expands_on_the_cpu_and_all_devices_asks_for_every_device():
    cert = load_matrix(gpu_proof.CERT_MATRIX)
    cells = expand(cert, ["cpu"])
    assert len(cells) == 14 and {c.axes.device for c in cells} == {"cpu"}
    assert {c.skip_reason for c in cells} <= {None, "bitsandbytes is not installed"}
    from harness.spec.matrix import matrix_from_doc

    alldev = matrix_from_doc(gpu_proof.all_devices_doc(), gpu_proof.CERT_MATRIX)
    assert [c.axes.device for c in expand(alldev, ["cpu", "cuda:0", "cuda:1"])] == ["cpu", "cuda:0", "cuda:1"]


# --- the summary writer ----------------------------------------------------------------------------

FLAGS_ON = {
    "deterministic_algorithms": True,
    "deterministic_warn_only": True,
    "cudnn_deterministic": True,
    "cudnn_benchmark": False,
    "cuda_matmul_allow_tf32": False,
    "cudnn_allow_tf32": False,
    "float32_matmul_precision": "highest",
    "cuda_matmul_fp16_reduced_precision": True,
    "cuda_matmul_bf16_reduced_precision": True,
    "num_threads": 4,
    "env": {"CUBLAS_WORKSPACE_CONFIG": ":16:8", "NVIDIA_TF32_OVERRIDE": "0"},
}


def _record(
    task="gpt",
    dtype="float32",
    bits=None,
    batch=1,
    profile="on",
    load="warm",
    tf32="off",
    worker=0,
    repeat=0,
    digest="a",
    status="ok",
    latency=0.010,
    load_s=0.0,
    peak=100 * 2**20,
    flags=None,
):
    q = f"q{bits}" if bits else "qnone"
    config = f"{task}/{dtype}/{q}/cuda0/p{profile}" + ("/tf32" if tf32 == "on" else "")
    axes = {
        "dtype": dtype,
        "quantize_bits": bits,
        "seed": 42,
        "device": "cuda:0",
        "threads": None,
        "batch_size": batch,
        "profile": profile,
        "load": load,
        "isa": "native",
        "tf32": tf32,
        "repeat": repeat,
        "worker": worker,
    }
    spec = f"{task}-{dtype}-{q}-{batch}-{profile}-{load}-{tf32}"
    rec = {
        "cell_id": f"{config}/b{batch}/{load}/w{worker}/r{repeat}",
        "spec_hash": spec,
        "config_id": config,
        "task_name": task,
        "kind": "gpt",
        "model": "tiny:gpt2",
        "axes": axes,
        "status": status,
    }
    if status != "ok":
        return {**rec, "reason": "cuda:0 is not available on this machine"}
    return {
        **rec,
        "digests": {"output": digest, "tokens": digest},
        "memory_kind": "cuda_max_allocated",
        "timings": {"load_s": load_s, "total_s": load_s + latency},
        "peak_memory_bytes": peak,
        "determinism": flags or FLAGS_ON,
        "model_meta": {"quantization": {"bits": bits, "quantized_layers": 4 if bits else 0, "linear_layers": 5}},
    }


def _synthetic_work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "smoke").mkdir(parents=True)
    recs = []
    for w in (0, 1):
        for r in (0, 1):
            first = 0.5 if r == 0 else 0.0  # the first execution after a load carries it
            recs.append(_record(worker=w, repeat=r, load_s=first))
            recs.append(_record(worker=w, repeat=r, batch=2, digest="b", latency=0.012))  # batch 2 differs
            recs.append(_record(worker=w, repeat=r, load="cold", load_s=0.4))  # cold == warm
            recs.append(
                _record(
                    worker=w,
                    repeat=r,
                    tf32="on",
                    digest="t" if r == 0 else "t2",
                    latency=0.008,
                    flags={
                        **FLAGS_ON,
                        "cuda_matmul_allow_tf32": True,
                        "cudnn_allow_tf32": True,
                        "float32_matmul_precision": "high",
                        "env": {"CUBLAS_WORKSPACE_CONFIG": ":16:8"},
                    },
                )
            )
            recs.append(
                _record(
                    worker=w,
                    repeat=r,
                    profile="off",
                    latency=0.009,
                    peak=90 * 2**20,
                    flags={**FLAGS_ON, "deterministic_algorithms": False, "cudnn_deterministic": False, "env": {}},
                )
            )
            recs.append(_record(bits=4, worker=w, repeat=r, digest=f"q{w}", peak=60 * 2**20))  # differs across workers
    recs.append(_record(task="audioldm", bits=8, status="skipped"))
    (work / "smoke" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"torn": ')
    (work / "steps.jsonl").write_text(
        json.dumps({"name": "smoke", "outcome": "ok", "rc": 0, "wall_s": 100.0, "limit_s": 270, "background": False})
        + "\n"
        + json.dumps(
            {
                "name": "overhead",
                "outcome": "timed out",
                "rc": 124,
                "wall_s": 150.0,
                "limit_s": 150,
                "background": False,
            }
        )
        + "\n"
    )
    (work / "env.json").write_text(
        json.dumps(
            {
                "gpu": "NVIDIA H200",
                "driver": "580.1",
                "cuda_runtime": "13.0",
                "torch": "2.11.0+cu130",
                "capability": [9, 0],
                "gpu_memory_bytes": 143 * 2**30,
                "libraries": {"bitsandbytes": "0.50.2"},
            }
        )
    )
    (work / "cert-gpu").mkdir()
    (work / "cert-gpu" / "certificate.json").write_text(
        json.dumps(
            {
                "summary": "NOT CERTIFIED (bitwise): pass 1, pass_with_tolerance 0, fail 1 of 2 configuration(s)",
                "passed": False,
                "device": "cuda:0",
                "reference_devices": ["cpu"],
                "match": "ignore:device",
                "environment_differs": ["gpu_names"],
                "not_certified": [],
                "configs": [
                    {
                        "config_id": "gpt-greedy/float32/qnone/cpu/pon",
                        "verdict": "pass",
                        "worst": "bitwise",
                        "first_divergence": None,
                        "reason": "bitwise identical in 2 cell(s)",
                    },
                    {
                        "config_id": "gpt-chatbot/float32/qnone/cpu/pon",
                        "verdict": "fail",
                        "worst": "divergent",
                        "first_divergence": 0,
                        "reason": "divergent from the reference",
                    },
                ],
            }
        )
    )
    (work / "overhead.json").write_text(
        json.dumps(
            {
                "device": "cuda:0",
                "cells": 8,
                "max_new_tokens": 256,
                "bare_equals_harness": "8/8",
                "ratio": 1.2,
                "profile_cost_pct": 3.0,
                "profile_cost_generation_pct": 1.0,
                "profile_cost_rounds_pct": [2.0, 4.0],
            }
        )
    )
    return work


def test_summary_writer_on_synthetic_records(tmp_path):
    work = _synthetic_work(tmp_path)
    doc = gpu_proof.write_summary(work, tmp_path / "out")
    smoke = doc["smoke"]
    assert smoke["records"] == 25 and smoke["statuses"] == {"ok": 24, "skipped": 1}  # the torn line is set aside
    by = {c["config_id"]: c for c in smoke["configs"]}
    base = by["gpt/float32/qnone/cuda0/pon"]
    assert base["bitwise"]["repeat"] == {"bitwise": True, "equal": 6, "compared": 6}  # b1 warm, b2, cold x 2 workers
    assert base["bitwise"]["process"]["bitwise"] is True
    assert base["bitwise"]["batch"] == {"bitwise": False, "equal": 0, "compared": 4}
    assert base["bitwise"]["load"] == {"bitwise": True, "equal": 4, "compared": 4}
    assert base["peak_memory_bytes"] == 100 * 2**20 and base["memory_kind"] == "cuda_max_allocated"
    assert base["latency_s_by_batch"] == {"1": pytest.approx(0.010), "2": pytest.approx(0.012)}
    assert base["load_s_median"] == pytest.approx(0.4)  # 2 warm loads of 0.5 s, 4 cold of 0.4 s
    assert base["flags"] == [
        {
            "flags": {k: FLAGS_ON[k] for k in gpu_proof.FLAG_KEYS}
            | {"CUBLAS_WORKSPACE_CONFIG": ":16:8", "NVIDIA_TF32_OVERRIDE": "0"},
            "records": 12,
        }
    ]
    tf32 = by["gpt/float32/qnone/cuda0/pon/tf32"]
    assert tf32["bitwise"]["repeat"]["bitwise"] is False and tf32["flags"][0]["flags"]["cuda_matmul_allow_tf32"] is True
    assert tf32["flags"][0]["flags"]["NVIDIA_TF32_OVERRIDE"] is None  # not set: recorded as such
    q4 = by["gpt/float32/q4/cuda0/pon"]
    assert q4["bitwise"]["repeat"]["bitwise"] is True and q4["bitwise"]["process"]["bitwise"] is False
    assert q4["quantized_layers"] == "4/5"
    effect = {r["config_id"]: r for r in smoke["tf32_effect"]}["gpt/float32/qnone/cuda0/pon/tf32"]
    assert effect["equal"] == 0 and effect["compared"] == 4 and effect["ratio"] == pytest.approx(0.8)
    prof = {r["config_id"]: r for r in smoke["profile_effect"]}["gpt/float32/qnone/cuda0/pon"]
    assert prof["equal"] == 4 and prof["ratio"] == pytest.approx(0.9)
    assert smoke["reasons"] == ["1 x cuda:0 is not available on this machine"]
    assert doc["certificates"]["cert-gpu"]["device"] == "cuda:0" and doc["certificates"]["cert-back"] is None
    assert doc["overhead"]["profile_cost_rounds_pct"] == [2.0, 4.0] and doc["all_devices"] is None
    assert doc["wall_s"] == 250.0 and not doc["rehearsal"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "NVIDIA H200" in md and "driver 580.1; CUDA runtime 13.0" in md
    assert (
        "| gpt/float32/qnone/cuda0/pon | 12/12 | - | yes (6/6) | yes (3/3) | NO (0/4) | yes (4/4) | 100.0 MiB "
        "| 10.0 ms / 12.0 ms | 400.0 ms | - |" in md
    )
    assert "det_algos=True, cudnn_det=True, cudnn_bench=False, matmul_tf32=True, cudnn_tf32=True, fp32_prec=high" in md
    assert "NVIDIA_TF32_OVERRIDE=unset" in md
    assert "| overhead | timed out | 150.0 s | 150 s |" in md
    assert "SGLang deterministic mode 34%" in md and "EigenAI under 2%" in md
    assert "### GPU run certified back on the CPU\n\nNot run." in md
    assert "Ray tasks with num_gpus=1" in md and "REHEARSAL" not in md
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["smoke"]["records"] == 25


def test_summary_of_an_empty_work_folder_says_what_was_not_run(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "REHEARSAL").touch()
    doc = gpu_proof.write_summary(tmp_path / "work", tmp_path / "out")
    md = (tmp_path / "out" / "summary.md").read_text()
    assert doc["rehearsal"] and "REHEARSAL on a CPU" in md and md.count("Not run.") == 7


# --- CUDA-path logic testable on a CPU ----------------------------------------------------------------


def test_stopwatch_synchronises_the_cells_own_device(monkeypatch):
    import torch

    from harness.engines.base import Stopwatch

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    with Stopwatch("cuda:1").section("generate"):
        pass
    with Stopwatch("cpu").section("generate"):
        pass
    assert calls == ["cuda:1", "cuda:1"]  # before and after; never the current device by default


def test_tf32_on_drops_an_inherited_driver_override(monkeypatch):
    from harness.determinism import DETERMINISTIC_ENV, apply_environment

    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    for name in (*DETERMINISTIC_ENV, "HARNESS_ISA"):  # unset so that monkeypatch restores them, absent or not
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    applied = apply_environment("on", tf32="on")
    assert "NVIDIA_TF32_OVERRIDE" not in os.environ and applied["NVIDIA_TF32_OVERRIDE"] == ""
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    applied = apply_environment("on", tf32="off")
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0" == applied["NVIDIA_TF32_OVERRIDE"]


def test_record_state_reads_the_reduced_precision_switches():
    from harness.determinism import record_state

    state = record_state()
    assert isinstance(state["cuda_matmul_fp16_reduced_precision"], bool)
    assert isinstance(state["cuda_matmul_bf16_reduced_precision"], bool)


def test_driver_version_falls_back_to_nvidia_smi(monkeypatch, tmp_path):
    from harness.execution import env

    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver in /proc")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 580.159.04\n")
    smi.chmod(0o755)
    monkeypatch.setattr(env, "_nvml_driver", lambda: None)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert env._nvidia_driver() == "580.159.04"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert env._nvidia_driver() is None


def test_unsigned_bundles_need_no_cryptography(monkeypatch):
    from harness.store.signing import SignatureError, check_document

    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")] + ["cryptography"]:
        monkeypatch.setitem(sys.modules, name, None)  # import cryptography(.x) -> ImportError
    monkeypatch.setitem(sys.modules, "cryptography.exceptions", None)
    assert check_document({"files": {}}, None, "bundle b").label == "unsigned"
    with pytest.raises(SignatureError, match="signed, but its signature cannot be checked here: the cryptography"):
        check_document({"signature": {"algorithm": "ed25519", "public_key": "00", "value": "00"}}, None, "bundle b")


def test_overhead_plan_runs_every_column_on_the_device_asked():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import overhead
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    plan = overhead.load_plan(True, 4, "cuda:0")
    assert plan["device"] == "cuda:0" and plan["matrix"]["axes"]["device"] == ["cuda:0"] and plan["threads"] == 4
    assert overhead.load_plan(True, None)["matrix"]["axes"]["device"] == ["cpu"]
    assert overhead.load_plan(True, None, "cpu", 128)["kwargs"]["max_new_tokens"] == 128


def test_wheels_script_pins_what_the_image_lacks():
    text = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    for pin in ("pydantic==", "pydantic-core==", "tomli-w==", "diffusers==", "bitsandbytes=="):
        assert pin in text
    assert "/.gpu/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_calibration_step_is_summarised_or_its_refusal_said(tmp_path):
    """The proof's calibrate step (the GPU run against the CPU reference): a made file's entries
    with their scope and rates; a refusal's one line; nothing: not run."""
    import shutil

    work = tmp_path / "work"
    work.mkdir()
    assert gpu_proof.calibration_summary(work) is None
    (work / "calibration.log").write_text("some progress\nerror: no honest pairs for audio tiny:musicgen float32\n")
    assert gpu_proof.calibration_summary(work) == {"refused": "error: no honest pairs for audio tiny:musicgen float32"}
    shipped = Path(__file__).resolve().parents[2] / "matrices" / "calibrations" / "standin-musicgen.json"
    shutil.copy(shipped, work / "calibration-device.json")
    doc = gpu_proof.calibration_summary(work)
    assert doc is not None and [e["config"] for e in doc["entries"]] == [
        "audio standin:musicgen bfloat16",
        "audio standin:musicgen float32",
        "audio standin:musicgen float32 8-bit",
    ]
    assert doc["entries"][1]["sources"] == ["repeat", "process", "threads", "isa"] and doc["entries"][1]["gpus"] == []
    md = gpu_proof.render({**gpu_proof.summarize(work), "calibration": doc})
    assert "## The GPU calibrated against the CPU reference (harness calibrate)" in md
    assert "| audio standin:musicgen float32 | repeat, process, threads, isa |" in md and "CPU only" in md
