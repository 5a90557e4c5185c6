"""Divergence located to the module: a planted change at step k is found at step k in the
module where it was planted; 1 vs 2 threads on tiny MusicGen names a real first module."""

from __future__ import annotations

import pytest

from harness.compare.locate import Hooks, LocateError, Trace, first_difference
from harness.workflows.locate import locate_docs, rerun_traced, sentence

MUSIC = {
    "model": "tiny:musicgen",
    "prompt": "80s pop track with bassy drums and synth",
    "seed": 42,
    "generation_config": {
        "max_new_tokens": 12,
        "do_sample": True,
        "top_k": 250,
        "top_p": 1.0,
        "temperature": 1.0,
        "guidance_scale": 3.0,
    },
}
GPT = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 8, "do_sample": True, "top_k": 20, "top_p": 1.0},
}


def _boost(output):
    return output * 3.0 + 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,doc,module,step",
    [
        ("audio", MUSIC, "model.decoder.model.decoder.layers.1.fc1", 3),
        ("gpt", GPT, "model.transformer.h.0.mlp.c_fc", 2),
    ],
)
def test_a_planted_change_is_located_at_its_step_and_module(tiny_musicgen, tiny_gpt2, kind, doc, module, step):
    honest = {"doc": doc, "threads": 1}
    planted = {**honest, "plant": (module, step, _boost)}
    _, base = rerun_traced(doc, kind, threads=1, step=step)
    _, changed = rerun_traced(doc, kind, threads=1, step=step, plant=(module, step, _boost))
    assert base["tokens"] != changed["tokens"]  # the plant really changes the discrete output
    loc = locate_docs(kind, honest, planted, step)
    assert loc.step == step and loc.module == f"{module}#0"
    assert loc.max_abs > 0.5 and "matmul" in sentence("planted", loc)
    # the re-run must reproduce the recorded output, else the location is refused
    with pytest.raises(LocateError, match="does not reproduce"):
        locate_docs(kind, honest, planted, step, (base, base))


@pytest.mark.slow
def test_threads_on_tiny_musicgen_name_a_real_first_module(tiny_musicgen):
    doc = {"doc": MUSIC}
    loc = locate_docs("audio", {**doc, "threads": 1}, {**doc, "threads": 2}, 0)
    assert loc.module is not None and loc.module.startswith("model.")
    assert 0 < loc.max_abs < 1e-4  # a float wobble, not a different computation
    assert loc.step == Hooks.OUTSIDE or loc.step == 0


def test_hooks_are_removed_and_first_difference_reads_traces():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with Hooks("gpt", {"model": model}, 0) as hooks:
        model(torch.ones(1, 4))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    names = [e[0] for e in hooks.trace.entries]
    assert names == ["model.0#0", "model.1#0", "model.2#0", "model#0"]  # children before the parent
    same = first_difference(hooks.trace, hooks.trace)
    assert same.module is None
    other = Trace(step=0, entries=list(hooks.trace.entries))
    key, _, arr, st = other.entries[1]
    other.entries[1] = (key, "changed", arr + 1, st)
    loc = first_difference(hooks.trace, other)
    assert loc.module == "model.1#0" and loc.max_abs == pytest.approx(1.0)
    with pytest.raises(LocateError, match="supports kinds"):
        Hooks("chain", {}, 0)
