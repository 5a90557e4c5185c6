"""Every task kind of the seeds through the same engines, matrices and comparisons, on the real
tiny models (no mocks): AudioLDM, MusicGen unconditional, MusicGen audio-prompted continuation
(path or base64, confined paths, padded batches) and the text -> LLM -> music chain (with
MusicGen and with AudioLDM), plus stage attribution, quantization coverage and matrices/kinds.toml.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.compare.chain import attribute_stage
from harness.engines.base import ModelCache
from harness.execution.execute import execute, neighbours_for
from harness.spec.tasks import parse_task, task_kind

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent
TASKS = ROOT / "matrices" / "tasks"
KINDS = {  # shipped tiny task file -> what it exercises
    "tiny-audioldm-lounge": "audioldm",
    "tiny-musicgen-unconditional": "musicgen-unconditional",
    "tiny-musicgen-continuation": "musicgen-audio-prompted",
    "tiny-chain-musicgen": "chain-musicgen",
    "tiny-chain-audioldm": "chain-audioldm",
}


def _load_script():
    spec = importlib.util.spec_from_file_location("make_prompt_wav", ROOT / "scripts" / "make_prompt_wav.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doc_of(name: str) -> dict:
    return json.loads((TASKS / f"{name}.json").read_text())


def with_seed(doc: dict, seed: int) -> dict:
    """The task with another seed, as a matrix seed axis applies it (both stages of a chain)."""
    if "text_stage" in doc:
        return {
            **doc,
            "text_stage": {**doc["text_stage"], "seed": seed},
            "audio_stage": {**doc["audio_stage"], "seed": seed},
        }
    return {**doc, "seed": seed}


@pytest.fixture(scope="module")
def cache(harness_home):
    return ModelCache(capacity=8)


def run(doc: dict, cache: ModelCache, batch_size: int = 1, load: str = "warm"):
    task = parse_task(doc)
    return execute(task, task_kind(task), "cpu", cache, threads=1, batch_size=batch_size, load=load)


class _ExecRuns:
    """``harness exec`` on every shipped tiny kind, as a user types it: fresh processes with one
    thread each, started together and collected when a test needs one."""

    def __init__(self, out: Path):
        self.out = out
        env = {**os.environ, "HARNESS_ALLOWED_PATHS": ""}
        self.procs = {
            name: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.cli",
                    "exec",
                    str(TASKS / f"{name}.json"),
                    "--threads",
                    "1",
                    "--out",
                    str(out),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in KINDS
        }

    def result(self, name: str):
        stdout, stderr = self.procs[name].communicate(timeout=300)
        summary = self.out / f"{name}.digests.json"
        return (
            self.procs[name].returncode,
            stdout,
            stderr,
            json.loads(summary.read_text()) if summary.exists() else None,
        )

    def close(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def exec_runs(harness_home, tmp_path_factory):
    from harness.models.tiny import ensure_tiny

    for name in ("gpt2", "musicgen", "audioldm"):  # built once here, not raced by five processes
        ensure_tiny(name)
    runs = _ExecRuns(tmp_path_factory.mktemp("exec"))
    yield runs
    runs.close()


# ---- the prompt sound -------------------------------------------------------------------------


def test_prompt_wav_is_deterministic_small_and_inline_copies_are_current(tmp_path):
    script = _load_script()
    wav = script.prompt_wav_bytes()
    assert wav == script.prompt_wav_bytes() and len(wav) < 50_000
    assert script.main(["--wav", str(tmp_path / "p.wav")]) == 0
    assert (tmp_path / "p.wav").read_bytes() == wav
    shipped = [TASKS / "tiny-musicgen-continuation.json", TASKS / "musicgen-small-continuation.json"]
    assert script.main(["--check", *map(str, shipped)]) == 0
    assert doc_of("tiny-musicgen-continuation")["audio_prompt"]["base64"] == base64.b64encode(wav).decode()


def test_every_shipped_task_and_matrix_validates(cli):
    files = sorted(str(p) for p in TASKS.glob("*.json"))
    res = cli("validate", *files)
    assert res.returncode == 0, res.stderr
    from harness.spec.matrix import expand, load_matrix

    for name in ("kinds", "musicgen-small", "gpt2", "audioldm", "smoke"):
        cells = expand(load_matrix(ROOT / "matrices" / f"{name}.toml"), ["cpu"])
        assert cells and len({c.cell_id for c in cells}) == len(cells)


# ---- each kind: reproducible in one process, across processes, and seed-sensitive ----------


@pytest.mark.parametrize("name", list(KINDS))
def test_kind_reproduces_in_process_and_under_harness_exec(name, cache, exec_runs):
    doc = doc_of(name)
    a, b = run(doc, cache), run(doc, cache)
    da = a.output.digests()
    assert da == b.output.digests(), "same seed, same process: bitwise"
    other = run(with_seed(doc, 7), cache).output.digests()
    assert other["output"] != da["output"] and other["waveform"] != da["waveform"], "another seed must change the audio"
    wave = a.output.arrays["waveform"]
    assert wave.dtype == np.float32 and wave.ndim == 2 and np.isfinite(wave).all()
    # the same task in a fresh `harness exec` process (a cold start: seed, then load) gives the same bytes
    cold = run(doc, cache, load="cold").output.digests()
    code, stdout, stderr, summary = exec_runs.result(name)
    assert code == 0, stderr
    assert summary["digests"] == cold
    assert f"output  sha256 {cold['output']}" in stdout
    assert (exec_runs.out / f"{name}.wav").stat().st_size > 1000


def test_chain_outputs_cover_both_stages(cache):
    for name, audio_array in (("tiny-chain-musicgen", "codes"), ("tiny-chain-audioldm", "latents")):
        out = run(doc_of(name), cache).output
        digests = out.digests()
        assert out.kind == "chain" and set(out.arrays) == {"text_token_ids", audio_array, "waveform"}
        assert out.response["waveform_sha256"] == digests["waveform"]  # the output digest covers the audio
        assert out.response["audio_prompt"] == (
            out.response["text_stage"]["choices"][0]["message"]["content"] or doc_of(name)["description"]
        )
        assert out.discrete == ("codes" if audio_array == "codes" else None)
        stages = out.meta["stages"]
        assert stages["text"]["tokens"] == digests["text_token_ids"]
        assert stages["audio"]["digest"] == digests["waveform"]


def test_chain_refuses_a_batch():
    task = parse_task(doc_of("tiny-chain-musicgen"))
    assert neighbours_for("chain", task, 1) == []
    with pytest.raises(ValueError, match="chain tasks"):
        neighbours_for("chain", task, 2)


# ---- stage attribution ------------------------------------------------------------------------


def test_attribute_stage_on_digest_dicts():
    base = {"text_token_ids": "t", "codes": "c", "waveform": "w", "output": "o"}
    assert attribute_stage(base, dict(base)) is None
    assert attribute_stage(base, {**base, "text_token_ids": "t2", "waveform": "w2"}) == "text"
    assert attribute_stage(base, {**base, "waveform": "w2", "output": "o2"}) == "audio"
    assert attribute_stage(base, {k: v for k, v in base.items() if k != "codes"}) == "audio"
    ldm = {"text_token_ids": "t", "latents": "l", "waveform": "w"}
    assert attribute_stage(ldm, {**ldm, "latents": "l2"}) == "audio"


def test_planted_stage_divergence_is_attributed(cache):
    doc = doc_of("tiny-chain-musicgen")
    ref = run(doc, cache).output.digests()
    # a different text stage (another text seed) changes everything after it: blame the text stage
    text_diverged = run({**doc, "text_stage": {**doc["text_stage"], "seed": 99}}, cache).output.digests()
    assert text_diverged["text_token_ids"] != ref["text_token_ids"]
    assert attribute_stage(ref, text_diverged) == "text"
    # the same text stage, another audio-stage seed: the text agrees bitwise, the audio does not
    audio_diverged = run({**doc, "audio_stage": {**doc["audio_stage"], "seed": 99}}, cache).output.digests()
    assert audio_diverged["text_token_ids"] == ref["text_token_ids"]
    assert audio_diverged["output"] != ref["output"]  # the output digest sees the audio stage
    assert attribute_stage(ref, audio_diverged) == "audio"
    ldm = doc_of("tiny-chain-audioldm")
    ldm_ref = run(ldm, cache).output.digests()
    ldm_audio = run({**ldm, "audio_stage": {**ldm["audio_stage"], "seed": 99}}, cache).output.digests()
    assert attribute_stage(ldm_ref, ldm_audio) == "audio"
    assert attribute_stage(ref, run(doc, cache).output.digests()) is None


# ---- MusicGen beyond plain text ---------------------------------------------------------------


def test_audio_prompt_as_path_or_base64_is_the_same_sound(cache, tmp_path, monkeypatch):
    (tmp_path / "prompt.wav").write_bytes(_load_script().prompt_wav_bytes())
    doc = doc_of("tiny-musicgen-continuation")
    inline = run(doc, cache).output
    monkeypatch.chdir(tmp_path)  # a relative wav_path resolves inside the current directory
    from_path = run({**doc, "audio_prompt": {"wav_path": "prompt.wav"}}, cache).output
    assert inline.meta["audio_prompt_sha256"] == from_path.meta["audio_prompt_sha256"]
    assert inline.digests() == from_path.digests()
    assert inline.meta["audio_prompt_frames"] == 15 and inline.meta["audio_prompt_seconds"] == 0.3
    # the output starts with the prompt: prompt frames + new frames
    assert inline.arrays["codes"].shape[0] == inline.meta["audio_prompt_frames"] + inline.meta["new_tokens"]
    # another sound gives another digest
    script = _load_script()
    short = base64.b64encode(script.prompt_wav_bytes(seconds=0.2)).decode()
    other = run({**doc, "audio_prompt": {"base64": short}}, cache).output
    assert other.meta["audio_prompt_sha256"] != inline.meta["audio_prompt_sha256"]


def test_wav_path_outside_the_allowed_folders_is_refused(cli, tmp_path, cache, monkeypatch):
    (tmp_path / "prompt.wav").write_bytes(_load_script().prompt_wav_bytes())
    work = tmp_path / "work"
    work.mkdir()
    task = work / "t.json"
    task.write_text(
        json.dumps({**doc_of("tiny-musicgen-continuation"), "audio_prompt": {"wav_path": str(tmp_path / "prompt.wav")}})
    )
    res = cli("exec", str(task), "--out", str(work / "out"), cwd=work, env={"HARNESS_ALLOWED_PATHS": ""})
    assert res.returncode == 2
    assert res.stderr.startswith("error: audio_prompt.wav_path: ") and "outside the allowed folders" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    # HARNESS_ALLOWED_PATHS opens the folder
    monkeypatch.chdir(work)
    monkeypatch.setenv("HARNESS_ALLOWED_PATHS", str(tmp_path))
    out = run(json.loads(task.read_text()), cache).output
    assert out.meta["audio_prompt_frames"] == 15


def test_padded_batch_of_audio_prompts_is_unpadded(cache):
    from harness.engines.musicgen import MusicgenEngine

    script = _load_script()
    doc = doc_of("tiny-musicgen-continuation")
    target = parse_task(
        {**doc, "audio_prompt": {"base64": base64.b64encode(script.prompt_wav_bytes(seconds=0.2)).decode()}}
    )
    longer = parse_task(
        {**doc, "prompt": "rock song with loud guitars", "audio_prompt": {"base64": doc["audio_prompt"]["base64"]}}
    )
    engine = MusicgenEngine()
    loaded, _ = cache.get(engine, target, "cpu")
    alone = engine.run(loaded, target, "cpu")
    batched = engine.run(loaded, target, "cpu", [longer])  # the target is padded to the neighbour's length
    assert batched.meta["batch_size"] == 2
    assert (
        batched.arrays["waveform"].shape == alone.arrays["waveform"].shape
    )  # batch_decode(padding_mask=...) stripped it
    assert batched.arrays["codes"].shape == alone.arrays["codes"].shape
    assert batched.meta["audio_prompt_sha256"] == alone.meta["audio_prompt_sha256"]
    # the batch-size axis keeps the audio prompt and changes the text
    neighbours = neighbours_for("audio", parse_task(doc), 3)
    assert all(n.audio_prompt == parse_task(doc).audio_prompt and n.prompt != doc["prompt"] for n in neighbours)
    assert run(doc, cache, batch_size=2).output.meta["batch_size"] == 2


def test_unconditional_batches_and_generation_kwargs_are_the_tasks_own(cache):
    doc = doc_of("tiny-musicgen-unconditional")
    out = run(doc, cache, batch_size=2).output
    assert out.meta["generation_kwargs"]["guidance_scale"] == 1.0  # get_unconditional_inputs' value
    assert (
        run({**doc, "generation_config": {**doc["generation_config"], "guidance_scale": 3.0}}, cache).output.meta[
            "generation_kwargs"
        ]["guidance_scale"]
        == 3.0
    )
    continuation = run(doc_of("tiny-musicgen-continuation"), cache).output
    assert continuation.meta["generation_kwargs"] == doc_of("tiny-musicgen-continuation")["generation_config"]
    assert "pipeline_added_kwargs" not in continuation.meta, "the model's generation config sets max_length and pad"
    bf16 = run({**doc_of("tiny-musicgen-continuation"), "dtype": "bfloat16"}, cache).output
    assert bf16.arrays["waveform"].dtype == np.float32


# ---- quantization: counted when it happens, refused when it cannot -------------------------


def test_8bit_on_cpu_quantizes_musicgen_and_both_chain_stages(cache):
    pytest.importorskip("bitsandbytes")
    music = run({**doc_of("tiny-musicgen-continuation"), "quantize_bits": 8}, cache)
    q = music.model_meta["quantization"]
    assert q["bits"] == 8 and q["quantized_layers"] > 0
    chain = run(
        {
            **(doc := doc_of("tiny-chain-musicgen")),
            "text_stage": {**doc["text_stage"], "quantize_bits": 8},
            "audio_stage": {**doc["audio_stage"], "quantize_bits": 8},
        },
        cache,
    )
    cq = chain.model_meta["quantization"]
    assert (
        cq["quantized_layers"] == cq["stages"]["text"]["quantized_layers"] + cq["stages"]["audio"]["quantized_layers"]
    )
    assert cq["stages"]["text"]["quantized_layers"] > 0 and cq["stages"]["audio"]["quantized_layers"] > 0
    assert chain.output.arrays["waveform"].size > 0


def test_audioldm_chain_8bit_on_cpu_is_refused_not_run_unquantized(cache):
    from harness.models.loading import UnsupportedConfiguration

    doc = doc_of("tiny-chain-audioldm")
    with pytest.raises(UnsupportedConfiguration, match="needs a GPU"):
        run({**doc, "audio_stage": {**doc["audio_stage"], "quantize_bits": 8}}, cache)


# ---- the matrix -------------------------------------------------------------------------------


def test_kinds_matrix_runs_every_kind_and_passes_its_gate(cli, tmp_path, harness_home):
    res = cli("run", str(ROOT / "matrices" / "kinds.toml"), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    statuses = {}
    for r in records:
        statuses.setdefault((r["task_name"], r["axes"]["quantize_bits"]), set()).add(r["status"])
    assert statuses == {
        ("audioldm-lounge", None): {"ok"},
        ("audioldm-lounge", 8): {"skipped"},
        ("musicgen-unconditional", None): {"ok"},
        ("musicgen-continuation", None): {"ok"},
        ("chain-musicgen", None): {"ok"},
        ("chain-audioldm", None): {"ok"},
    }
    skipped = [r for r in records if r["status"] == "skipped"]
    assert len(skipped) == 8 and all("needs a GPU" in r["reason"] for r in skipped)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    verdicts = {c["config_id"]: c["verdict"] for c in report["configs"]}
    assert verdicts.pop("audioldm-lounge/float32/q8/cpu/pon") == "skipped"
    assert set(verdicts.values()) == {"ready"} and len(verdicts) == 5
    assert all(c["seed_sensitive"] for c in report["configs"] if c["verdict"] == "ready")
