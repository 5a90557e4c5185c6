"""Task definitions: reference compatibility, strictness, hostile input, shipped schemas, lint."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.spec.lint import lint_task
from harness.spec.schemas import stale_schemas
from harness.spec.tasks import AudioTask, GPTTask, TaskError, load_task_file, parse_task

ROOT = Path(__file__).parent.parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "crynux"
AUDIO_SEED = {
    "model": "facebook/musicgen-small",
    "prompt": "80s pop track with bassy drums and synth",
    "generation_config": {
        "max_new_tokens": 1500,
        "do_sample": True,
        "top_k": 250,
        "top_p": 0.0,
        "temperature": 1.0,
        "guidance_scale": 3.0,
    },
    "seed": 42,
    "dtype": "auto",
    "quantize_bits": 8,
}
GPT_SEED = {
    "model": "gpt2",
    "messages": [{"role": "user", "content": "I want to create a chat bot. Any suggestions?"}],
    "generation_config": {
        "max_new_tokens": 30,
        "do_sample": True,
        "num_beams": 1,
        "temperature": 1.0,
        "typical_p": 1.0,
        "top_k": 20,
        "top_p": 1.0,
        "repetition_penalty": 1.0,
        "num_return_sequences": 1,
    },
    "seed": 42,
    "dtype": "auto",
    "quantize_bits": 4,
}


def _reference(name: str) -> dict:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return json.loads(path.read_text())


def test_seed_examples_validate_under_reference_and_here():
    jsonschema.validate(AUDIO_SEED, _reference("text-to-audio-task.schema.json"))
    jsonschema.validate(GPT_SEED, _reference("gpt-inference-task.schema.json"))
    assert isinstance(parse_task(AUDIO_SEED), AudioTask)
    assert isinstance(parse_task(GPT_SEED), GPTTask)


@pytest.mark.parametrize("path", sorted((ROOT / "matrices" / "tasks").glob("*.json")), ids=lambda p: p.name)
def test_shipped_task_files_validate(path):
    load_task_file(path)


def test_misspelt_field_is_named():
    doc = {**GPT_SEED, "generation_config": {"temprature": 0.7}}
    with pytest.raises(TaskError) as err:
        parse_task(doc)
    assert "$.generation_config.temprature: unknown field" in str(err.value)


def test_image_content_is_refused_with_its_path():
    doc = {
        **GPT_SEED,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "base64": "AAAA"}]}
        ],
    }
    jsonschema.validate(doc, _reference("gpt-inference-task.schema.json"))
    with pytest.raises(TaskError, match=r"messages\[0\]\.content\[1\]: image content"):
        parse_task(doc)


def test_nan_and_negative_seed_and_huge_prompt_are_refused():
    with pytest.raises(TaskError, match=r"\$\.seed"):
        parse_task({**AUDIO_SEED, "seed": -1})
    with pytest.raises(TaskError, match="not valid JSON"):
        from harness.spec.tasks import loads_task_json

        loads_task_json('{"model": "x", "prompt": "p", "generation_config": {"temperature": NaN}}')
    with pytest.raises(TaskError, match=r"\$\.prompt"):
        parse_task({**AUDIO_SEED, "prompt": "x" * 10_000_000})


# --- documents valid under the reference schemas: validate here or a named refusal --------
_gen_values = {
    "max_new_tokens": st.integers(-5, 70_000),
    "do_sample": st.booleans(),
    "num_beams": st.integers(0, 8),
    "temperature": st.floats(-1, 5, allow_nan=False),
    "typical_p": st.floats(0, 1),
    "top_k": st.integers(-1, 300),
    "top_p": st.floats(0, 1),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.floats(0, 3),
    "num_return_sequences": st.integers(0, 20),
    "stop_strings": st.lists(st.text(max_size=5), max_size=3),
}
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
    optional={
        "content": st.one_of(
            st.text(max_size=30),
            st.none(),
            st.lists(
                st.fixed_dictionaries({"type": st.just("text"), "text": st.text(min_size=1, max_size=10)}), max_size=2
            ),
        ),
        "tool_call_id": st.one_of(st.text(max_size=5), st.none()),
    },
)
_gpt_docs = st.fixed_dictionaries(
    {"model": st.text(min_size=1, max_size=20), "messages": st.lists(_message, max_size=3)},
    optional={
        "generation_config": st.fixed_dictionaries({}, optional=_gen_values),
        "seed": st.integers(-10, 2**33),
        "dtype": st.sampled_from(["float16", "bfloat16", "float32", "auto"]),
        "quantize_bits": st.sampled_from([4, 8, None]),
        "tools": st.none(),
        "template_args": st.none(),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_gpt_docs)
def test_reference_valid_gpt_documents_validate_or_name_the_field(doc):
    jsonschema.validate(doc, _reference("gpt-inference-task.schema.json"))
    try:
        parse_task(doc, "gpt")
    except TaskError as err:
        assert str(err).startswith("$"), str(err)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _json,
        st.dictionaries(
            st.sampled_from(
                ["model", "prompt", "messages", "seed", "dtype", "generation_config", "quantize_bits", "stages"]
            ),
            _json,
        ),
    )
)
def test_arbitrary_documents_give_task_errors_never_tracebacks(doc):
    try:
        parse_task(doc)
    except TaskError as err:
        assert str(err) and all(line.startswith("$") for line in str(err).splitlines())


def test_shipped_schemas_are_fresh():
    assert stale_schemas() == [], "regenerate with: harness schema --write harness/schemas"


@pytest.mark.parametrize(
    "patch,code",
    [
        ({"top_p": 0.0}, "seed-no-effect"),
        ({"do_sample": False}, "seed-no-effect"),
        ({"top_k": 1}, "seed-no-effect"),
        ({"temperature": 0.0, "top_p": 1.0}, "temperature-zero"),
    ],
)
def test_lint_audio(patch, code):
    doc = {**AUDIO_SEED, "generation_config": {**AUDIO_SEED["generation_config"], **patch}}
    assert code in {w.code for w in lint_task(parse_task(doc), "cpu")}


def test_lint_clean_task_and_limits():
    doc = {**AUDIO_SEED, "quantize_bits": None, "generation_config": {**AUDIO_SEED["generation_config"], "top_p": 1.0}}
    assert lint_task(parse_task(doc), "cpu") == []
    warnings = lint_task(parse_task(doc), "cpu", {"max_new_tokens": 1024})
    assert [w.code for w in warnings] == ["max-new-tokens"]
    gpt = parse_task({**GPT_SEED, "generation_config": {"num_beams": 4}})
    assert any("beam search" in w.message for w in lint_task(gpt, "cpu"))


def test_seed_lint_reads_the_effective_config_the_model_and_the_task():
    """A task without do_sample samples when the model's generation config says so (as a node
    runs it); there is no invented network default such as top_p 0.0 behind the task's back."""
    from harness.spec.lint import model_generation_config

    bare = parse_task({"model": "tiny:musicgen", "prompt": "calm jazz", "generation_config": {"max_new_tokens": 8}})
    musicgen = model_generation_config("tiny:musicgen")
    assert musicgen["do_sample"] is True
    assert lint_task(bare, "cpu", model_generation=musicgen) == []
    silent = lint_task(bare, "cpu", model_generation={})  # known, no generation config: transformers' greedy default
    assert [(w.code, "says false" in w.message) for w in silent] == [("seed-no-effect", True)]
    unknown = lint_task(bare, "cpu")
    assert [w.code for w in unknown] == ["seed-no-effect"] and "not on this machine" in unknown[0].message
    assert model_generation_config("no-such/model-anywhere") is None


def test_removed_generation_defaults_field_says_why():
    with pytest.raises(
        TaskError,
        match=r"\$\.generation_defaults: removed: a node passes only the task's "
        r"generation_config",
    ):
        parse_task({**AUDIO_SEED, "generation_defaults": "model"})
