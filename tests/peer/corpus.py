"""The task documents the harness and the network's runners must answer byte for byte.

Each case is a task document without its ``model`` (the tests give both sides the tiny
model's folder: the runners need a path, and the GPT response names the model), plus what the
case is there to show, so a case that stopped showing it fails instead of passing vacuously:
``seed_sensitive`` (do seeds 42 and 43 give other outputs on the runner?) and, for GPT, the
finish reasons the case is about. Token budgets are small (the documents' 1500 audio tokens
take minutes on a CPU; the sampling fields are the documents' own).
"""

from __future__ import annotations

from typing import Any

AUDIO_PROMPT = "80s pop track with bassy drums and synth"
# The network's documented audio example (shared/seeds: text-to-music task), 48 tokens instead of 1500.
DOC_AUDIO = {
    "max_new_tokens": 48,
    "do_sample": True,
    "top_k": 250,
    "top_p": 0.0,
    "temperature": 1.0,
    "guidance_scale": 3.0,
}
SAMPLED_AUDIO = {"max_new_tokens": 48, "do_sample": True}

AUDIO_CASES: dict[str, dict[str, Any]] = {
    "doc-example-8bit": {"doc": {"generation_config": DOC_AUDIO, "quantize_bits": 8}, "seed_sensitive": False},
    "doc-example-float32": {"doc": {"generation_config": DOC_AUDIO}, "seed_sensitive": False},
    "doc-example-4bit": {"doc": {"generation_config": DOC_AUDIO, "quantize_bits": 4}, "seed_sensitive": False},
    "sampled-no-top-p": {"doc": {"generation_config": SAMPLED_AUDIO}, "seed_sensitive": True},
    # nothing but the prompt: the model's generation config decides (it samples, 256 positions)
    "no-generation-config": {"doc": {}, "seed_sensitive": True},
    "temperature-top-p": {
        "doc": {
            "generation_config": {
                "max_new_tokens": 48,
                "do_sample": True,
                "temperature": 0.7,
                "top_k": 50,
                "top_p": 0.9,
            }
        },
        "seed_sensitive": True,
    },
    "greedy": {"doc": {"generation_config": {"max_new_tokens": 48, "do_sample": False}}, "seed_sensitive": False},
    "float16": {"doc": {"generation_config": SAMPLED_AUDIO, "dtype": "float16"}, "seed_sensitive": True},
    "bfloat16": {"doc": {"generation_config": SAMPLED_AUDIO, "dtype": "bfloat16"}, "seed_sensitive": True},
    "8bit-sampled": {"doc": {"generation_config": SAMPLED_AUDIO, "quantize_bits": 8}, "seed_sensitive": True},
    "8bit-float16": {
        "doc": {"generation_config": SAMPLED_AUDIO, "quantize_bits": 8, "dtype": "float16"},
        "seed_sensitive": True,
    },
    "4bit-sampled": {"doc": {"generation_config": SAMPLED_AUDIO, "quantize_bits": 4}, "seed_sensitive": True},
}

USER = {"role": "user", "content": "I want to create a chat bot. Any suggestions?"}
# The network's documented GPT example (shared/seeds: text-to-text task); the document asks 4-bit.
DOC_GPT = {
    "max_new_tokens": 30,
    "do_sample": True,
    "num_beams": 1,
    "temperature": 1.0,
    "typical_p": 1.0,
    "top_k": 20,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "num_return_sequences": 1,
}
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant for musicians."},
    {"role": "user", "content": "Which chords go with a sad melody?"},
    {"role": "assistant", "content": "Minor chords, for example A minor and D minor."},
    {"role": "user", "content": [{"type": "text", "text": "And for a happy one?"}]},
]

GPT_CASES: dict[str, dict[str, Any]] = {
    "doc-example-4bit": {"doc": {"generation_config": DOC_GPT, "quantize_bits": 4}, "seed_sensitive": True},
    "doc-example": {"doc": {"generation_config": DOC_GPT}, "seed_sensitive": True, "finish": ["length"]},
    "greedy": {"doc": {"generation_config": {"max_new_tokens": 30, "do_sample": False}}, "seed_sensitive": False},
    # two rows, one ends in EOS early: usage counts the padded rows, as the runner does
    "two-sequences-one-stops": {
        "doc": {
            "generation_config": {"max_new_tokens": 40, "do_sample": True, "top_k": 20, "num_return_sequences": 2},
            "seed": 0,
        },
        "seed_sensitive": True,
        "finish": ["stop", "length"],
    },
    "stops-at-eos": {
        "doc": {"generation_config": {"max_new_tokens": 40, "do_sample": True, "temperature": 1.5}, "seed": 16},
        "seed_sensitive": True,
        "finish": ["stop"],
    },
    "bfloat16": {"doc": {"generation_config": DOC_GPT, "dtype": "bfloat16"}, "seed_sensitive": True},
    "8bit": {"doc": {"generation_config": DOC_GPT, "quantize_bits": 8}, "seed_sensitive": True},
    "conversation": {"doc": {"messages": CONVERSATION, "generation_config": DOC_GPT}, "seed_sensitive": True},
}


# The trained stand-ins run a few of the cases (a greedy one, sampled float32, bfloat16, 8-bit):
# the same code paths on peaked distributions, where a near-tie is rare instead of common.
STANDIN_AUDIO_CASES = ("doc-example-float32", "sampled-no-top-p", "bfloat16", "8bit-sampled")
STANDIN_GPT_CASES = ("doc-example", "greedy", "bfloat16", "8bit")


def audio_doc(case: str, model: str, seed: int | None = None) -> dict[str, Any]:
    doc = {"model": model, "prompt": AUDIO_PROMPT, "seed": 42, **AUDIO_CASES[case]["doc"]}
    return doc if seed is None else {**doc, "seed": seed}


def gpt_doc(case: str, model: str, seed: int | None = None) -> dict[str, Any]:
    doc = {"model": model, "messages": [USER], "seed": 42, **GPT_CASES[case]["doc"]}
    return doc if seed is None else {**doc, "seed": seed}
