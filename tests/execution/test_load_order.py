"""Cold and warm starts: why they differ (evidence), that the harness runs both as a node does,
and the ``load`` axis of a matrix from expansion to the report."""

from __future__ import annotations

import json

import pytest
import torch

from harness.engines.base import ModelCache
from harness.execution.execute import execute
from harness.spec.matrix import expand, matrix_from_doc
from harness.spec.tasks import parse_task

SAMPLED = {
    "model": "tiny:musicgen",
    "prompt": "80s pop track with bassy drums and synth",
    "seed": 42,
    "generation_config": {"max_new_tokens": 24, "do_sample": True},
}
GPT = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 8, "do_sample": True, "top_k": 20},
}


def _weight_normed_shapes(model) -> set[tuple[int, ...]]:
    from torch.nn.utils import parametrize

    return {
        tuple(m.weight.shape)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and parametrize.is_parametrized(m, "weight")
    }


def test_loading_musicgen_draws_random_numbers_into_weight_normed_convs_only(monkeypatch, tiny_musicgen, tiny_gpt2):
    """The cause of cold != warm: after the checkpoint is loaded, transformers' _init_weights
    still runs on EnCodec's weight-normed convolutions, whose ``weight`` is recomputed on every
    access (a fresh tensor without ``_is_hf_initialized``): normal_/kaiming_normal_ fill that
    throwaway tensor and advance torch's CPU generator. The loaded weights are untouched."""
    from transformers import AutoModelForCausalLM, AutoModelForTextToWaveform

    drawn: list[tuple[int, ...]] = []
    original = torch.Tensor.normal_

    def spy(self, *args, **kwargs):
        if self.device.type == "cpu":
            drawn.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "normal_", spy)
    torch.manual_seed(42)
    before = torch.get_rng_state()
    model = AutoModelForTextToWaveform.from_pretrained(tiny_musicgen)
    assert not torch.equal(before, torch.get_rng_state()), "loading MusicGen moved the generator"
    assert drawn and set(drawn) <= _weight_normed_shapes(model.audio_encoder)
    torch.manual_seed(7)
    again = AutoModelForTextToWaveform.from_pretrained(tiny_musicgen)
    pairs = zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    drawn.clear()
    before = torch.get_rng_state()
    AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    assert torch.equal(before, torch.get_rng_state()) and not drawn, "GPT-2 loads without drawing"


@pytest.mark.slow
def test_cold_and_warm_each_reproduce_and_differ_only_where_loading_draws(tiny_musicgen, tiny_gpt2):
    cache = ModelCache()
    task = parse_task(SAMPLED)
    runs = [
        execute(task, "audio", "cpu", cache, load=load, threads=1).output.digests()
        for load in ("cold", "warm", "cold", "warm")
    ]
    assert runs[0] == runs[2] and runs[1] == runs[3], "each load order reproduces"
    assert runs[0]["codes"] != runs[1]["codes"], "sampled MusicGen: cold and warm draw other tokens"
    assert cache.loads == 2, "every cold start loaded a fresh copy; warm ones reused it"
    gpt = parse_task(GPT)
    assert (
        execute(gpt, "gpt", "cpu", cache, load="cold").output.digests()
        == execute(gpt, "gpt", "cpu", cache, load="warm").output.digests()
    )


def test_load_axis_ids_and_spec_hashes():
    doc = {
        "name": "loads",
        "repeats": 1,
        "workers": 1,
        "tasks": [{"name": "m", "task": SAMPLED}],
        "axes": {"load": ["cold", "warm"], "threads": [1]},
    }
    cells = expand(matrix_from_doc(doc))
    assert [c.cell_id for c in cells] == [
        "m/auto/qnone/seed42/cpu/t1/b1/pon/cold/w0/r0",
        "m/auto/qnone/seed42/cpu/t1/b1/pon/warm/w0/r0",
    ]
    assert cells[0].spec_hash != cells[1].spec_hash
    plain = expand(matrix_from_doc({**doc, "axes": {"threads": [1]}}))
    assert [c.spec_hash for c in plain] == [cells[1].spec_hash], "warm is the default and keeps its hash"
    assert cells[0].config_id == cells[1].config_id, "load is compared within a configuration"


@pytest.mark.slow
def test_report_shows_the_load_dimension(cli, tmp_path, tiny_musicgen):
    from harness.spec.matrix import dump_matrix

    doc = {
        "name": "loads",
        "repeats": 2,
        "workers": 1,
        "timeout_s": 120,
        "tasks": [{"name": "m", "task": SAMPLED}],
        "axes": {"load": ["cold", "warm"], "threads": [1], "dtype": ["float32"]},
        "gates": {"verdict_dimensions": ["repeat", "process"]},
    }
    (tmp_path / "m.toml").write_text(dump_matrix(doc))
    res = cli("run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"), "--no-progress", "--formats", "md,json")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    config = report["configs"][0]
    assert config["dimensions"]["load"]["worst"] == "divergent" and config["dimensions"]["repeat"]["worst"] == "bitwise"
    assert "load: divergent (reported, not judged)" in config["reason"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| load | 1 |" in md and "- Cold vs warm: divergent in 1 pair(s), first divergent step 0" in md
