"""The heterogeneous-fleet lab on one machine: the shipped smoke gate holds under every CPU
kernel set this machine can give (a whole run under AVX2 kernels stands in for an AVX2-only
CI machine), and a bundle made here certifies across emulated kernel sets with the true
verdict per configuration and the differing environment fields named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.isa import BELOW_NATIVE, environment_for, resolve, unavailable
from harness.spec.matrix import dump_matrix
from harness.vocabulary import ACCEPTED, SAME_KERNELS

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "matrices" / "smoke.toml"
CALIBRATION = ROOT / "matrices" / "calibrations" / "tiny-musicgen.json"


def trimmed_smoke(tmp_path: Path) -> Path:
    """The shipped smoke matrix (its tasks, calibration, thresholds and gates) on one seed,
    batch 1, warm only: every judged dimension and the isa axis, in a quarter of the cells."""
    doc = tomllib.loads(SMOKE.read_text())
    doc["axes"].update(seed=[42], batch_size=[1])
    doc["tasks"] = [
        {**{k: v for k, v in t.items() if k != "axes"}, "file": str(SMOKE.parent / t["file"])} for t in doc["tasks"]
    ]
    doc["exclude"] = [r for r in doc["exclude"] if "batch_size" not in r and "load" not in r]
    audio = doc["validators"]["audio"]
    audio["calibration"] = str(SMOKE.parent / audio["calibration"])
    path = tmp_path / "smoke-trimmed.toml"
    path.write_text(dump_matrix(doc))
    return path


def _run(matrix: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out), "--no-progress", *extra],
        env=full,
        capture_output=True,
        text=True,
        timeout=900,
    )


KERNEL_SETS = ["native", "avx2"]


@pytest.mark.slow
@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_smoke_gate_holds_under_each_kernel_set(kernels, tmp_path, tiny_gpt2, tiny_musicgen):
    why = unavailable(kernels)
    if why:
        pytest.skip(why)
    res = _run(trimmed_smoke(tmp_path), tmp_path / "run", environment_for(kernels))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    configs = {c["config_id"]: c for c in report["configs"]}
    assert len(configs) == 6
    for cid, c in configs.items():
        assert c["verdict"] in ACCEPTED, (cid, c["reason"])
        if c["kind"] == "audio" and c["verdict"] == "ready_with_tolerance":
            assert c["validator"]["sources"] and c["thresholds"], cid  # judged by its own calibration entry
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    classes = {r["axes"]["isa"]: r["determinism"]["kernels"]["class"] for r in records if r["status"] == "ok"}
    if kernels == "avx2":  # the whole run emulates an AVX2-only machine: below-native is scalar there
        assert classes == {"native": "aten-avx2/onednn-avx2", BELOW_NATIVE: "aten-default/onednn-sse41"}
    assert classes["native"] != classes[BELOW_NATIVE]  # the isa pair always compares two kernel classes
    findings = " ".join(f["text"] for f in report["summary"]["findings"])
    isa_divergent = [
        cid for cid, c in configs.items() if (c["dimensions"].get("isa") or {}).get("worst") == "divergent"
    ]
    assert ("not consensus-ready across CPU kinds" in findings) == bool(isa_divergent)


@pytest.mark.slow
def test_certify_across_emulated_kernel_sets(tmp_path, tiny_gpt2, tiny_musicgen):
    """A native bundle certified with --isa avx2: the environment fields that differ are the
    kernels; each configuration gets its true verdict, and a half-and-half fleet's figures."""
    from harness.execution.runner import run_matrix
    from harness.spec.matrix import load_matrix
    from harness.store.bundle import write_bundle
    from tests.workflows.test_certify import GPT_TASK, MUSIC_TASK, _toml, run_cli

    why = unavailable("avx2")
    if why:
        pytest.skip(why)
    doc = {
        "schema_version": 1,
        "name": "cert-isa",
        "repeats": 2,
        "workers": 1,
        "timeout_s": 120,
        "tasks": [{"name": "gpt", "task": GPT_TASK}, {"name": "musicgen", "task": MUSIC_TASK}],
        "axes": {"dtype": ["float32", "bfloat16"], "seed": [1], "threads": [1]},
        "validators": {"audio": {"rule": "composite", "calibration": str(CALIBRATION)}},
    }
    matrix = tmp_path / "cert.toml"
    matrix.write_text(_toml(doc))
    run_matrix(load_matrix(matrix), tmp_path / "ref", progress=False)
    bundle = write_bundle(tmp_path / "ref")
    rc = run_cli(
        "certify", "--reference", str(bundle), "--isa", "avx2", "--out", str(tmp_path / "cert"), "--no-progress"
    )
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    assert rc == 1 and cert["emulation"]["isa"] == "avx2"
    assert any(f.startswith("kernels") for f in cert["environment_differs"]), cert["environment_differs"]
    by = {c["config_id"]: c for c in cert["configs"]}
    assert by["gpt/float32/qnone/cpu/pon"]["verdict"] == "pass"  # tiny GPT-2: bitwise under every kernel set
    for cid, c in by.items():
        assert c["network"] is not None and set(c["network"]) == {"p_accepted", "p_aborted", "invalidated"}, cid
        if c["verdict"] != "pass":
            # never a tampering finding for an honest kernel change: divergent codes (with the first
            # divergent step), or a calibration scope that does not hold this configuration
            assert not c["findings"], (cid, c["reason"])
            assert c["first_divergence"] is not None or "calibrat" in c["reason"], (cid, c["reason"])
    text = (tmp_path / "cert" / "certificate.md").read_text()
    assert "Emulation: threads = 1, isa = avx2" in text or "isa = avx2" in text


#: a whole run capped to AVX2 kernels: an AVX2-only machine such as AMD Zen 3 (README "Across CPU kinds")
ZEN3 = environment_for("avx2")


@pytest.mark.slow
@pytest.mark.parametrize("machine", ["here", "zen3"])
def test_only_other_kernel_classes_are_compared_across_cpu_kinds(machine, tmp_path, tiny_gpt2):
    """Tiny GPT-2 at native, below-native and avx2, on this machine as it is and emulating a Zen 3.
    below-native resolves on the machine to the next narrower kernels (scalar on the Zen 3) and
    the record says so; a level whose read-back class is native's (avx2 on the Zen 3) is
    reported as no comparison: untested with the reason, in the report and JUnit, never bitwise."""
    from tests.execution.test_matrix_runner import GPT_TASK

    env = ZEN3 if machine == "zen3" else {}
    for level in ("avx2", BELOW_NATIVE):
        why = unavailable(level, environ={**os.environ, **env})
        if why:
            pytest.skip(why)
    doc = {
        "schema_version": 1,
        "name": "isa-levels",
        "repeats": 1,
        "workers": 1,
        "timeout_s": 120,
        "tasks": [{"name": "gpt", "task": GPT_TASK}],
        "axes": {"dtype": ["float32"], "threads": [1], "isa": ["native", BELOW_NATIVE, "avx2"]},
        "gates": {"fail_on": ["not_ready", "failed"], "verdict_dimensions": ["isa"]},
    }
    matrix = tmp_path / "isa.toml"
    matrix.write_text(dump_matrix(doc))
    res = _run(matrix, tmp_path / "run", env, "--junit", str(tmp_path / "junit.xml"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    kernels = {r["axes"]["isa"]: r["determinism"]["kernels"] for r in records}
    expected = resolve(BELOW_NATIVE, environ={**os.environ, **env})
    assert kernels[BELOW_NATIVE]["isa"] == expected  # the level it resolved to, read back in the record
    assert any(r["cell_id"].endswith("/isa-below-native/w0/r0") for r in records)  # the id keeps the relative name
    assert kernels[BELOW_NATIVE]["class"] != kernels["native"]["class"]
    same = kernels["avx2"]["class"] == kernels["native"]["class"]
    if machine == "zen3":
        assert expected == "scalar" and kernels[BELOW_NATIVE]["class"] == "aten-default/onednn-sse41"
        assert same and kernels["native"]["class"] == "aten-avx2/onednn-avx2"
    (config,) = json.loads((tmp_path / "run" / "report.json").read_text())["configs"]
    isa = config["dimensions"]["isa"]
    assert isa["not_compared"] == int(same) and isa["pairs"] == 2 - int(same)
    assert isa["worst"] == "bitwise" and config["verdict"] == "ready"  # tiny GPT-2: bitwise under every level
    junit = (tmp_path / "junit.xml").read_text()
    report = (tmp_path / "run" / "report.md").read_text()
    if same:
        assert f"not compared: 1 pair(s), {SAME_KERNELS}" in junit
        assert f"1 more pair(s) not compared: {SAME_KERNELS}" in report and SAME_KERNELS in config["reason"]
    else:
        assert SAME_KERNELS not in junit + report
