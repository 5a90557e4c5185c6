"""Every per-kind fact lives on the kind's ``KindSpec``, and each cell fact has one copy.

A plugin kind (the toy kind, or a KindSpec built here) names its validator rules, network
rule, the fields it is recognised by and its node-runner support in its one registry line;
plugins come from ``HARNESS_KINDS`` or the ``consensus_harness.kinds`` entry-point group; an
engine is checked against the Engine protocol when it is resolved; a cell's seed, dtype and
quantization are read from its task document only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import typing
from pathlib import Path

import pytest

from harness.compare.validators import network_rule
from harness.spec.kinds import (
    ENTRY_POINT_GROUP,
    KINDS,
    VALIDATOR_RULES,
    EngineMismatch,
    KindRegistry,
    KindSpec,
    NodeRunner,
    UnknownName,
    engine_problem,
)
from harness.spec.matrix import Cell, MatrixError, expand, load_matrix, matrix_from_doc, node_runner_refusal
from harness.spec.policy import NamedValidator
from harness.spec.tasks import TaskError, infer_kind, parse_task
from tests.execution.toy_kind import TOY, ToyEngine

ROOT = Path(__file__).resolve().parents[2]
TOY_ENV = "tests.execution.toy_kind:TOY"
#: a plugin kind that says every per-kind fact itself
TOY_FULL = TOY.model_copy(
    update={
        "name": "toy-full",
        "recognised_by": ("text",),
        "validator_rules": ("tokens",),
        "network_rule": ("tokens", "proposed: equal echoes"),
        "node_runner": NodeRunner(package="toy_runner", upstream="nowhere", interface="gpt", extensions=("text",)),
    }
)


class NoSeededEngine:
    """A run() that predates cold loads: it cannot be told the caller seeded already."""

    kind = "toy"

    def load(self, task, device):
        return ToyEngine().load(task, device)

    def run(self, loaded, task, device, neighbours=()):
        return ToyEngine().run(loaded, task, device, neighbours)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setenv("HARNESS_KINDS", TOY_ENV)
    yield
    monkeypatch.delenv("HARNESS_KINDS")
    assert "toy" not in KINDS


def _toy_matrix(**over):
    return {
        "name": "toy",
        "repeats": 1,
        "workers": 1,
        "tasks": [{"name": "echo", "kind": "toy", "task": {"text": "hi"}}],
        **over,
    }


# --- entry points ---------------------------------------------------------------------------
def _entry_points(monkeypatch, *values: str):
    eps = [importlib.metadata.EntryPoint(name=f"k{i}", value=v, group=ENTRY_POINT_GROUP) for i, v in enumerate(values)]
    asked = []

    def entry_points(**params):
        asked.append(params)
        return importlib.metadata.EntryPoints(eps if params.get("group") == ENTRY_POINT_GROUP else [])

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return asked


def test_an_installed_distribution_adds_a_kind_through_the_entry_point_group(monkeypatch):
    asked = _entry_points(monkeypatch, TOY_ENV)
    registry = KindRegistry()
    registry.add(KINDS.get("audio"))
    assert registry.names() == ["audio", "toy"] and registry.get("toy") is TOY
    assert asked == [{"group": "consensus_harness.kinds"}]
    registry.names()
    assert len(asked) == 1, "entry points are read once per process"


@pytest.mark.parametrize(
    "value,message",
    [
        ("harness.spec.kinds:KINDS", "is not a KindSpec"),
        ("no_such_plugin_module:KIND", "cannot load it (ModuleNotFoundError"),
    ],
)
def test_a_bad_entry_point_is_one_line_naming_it(monkeypatch, value, message):
    _entry_points(monkeypatch, value)
    with pytest.raises(UnknownName) as err:
        KindRegistry().names()
    assert str(err.value).startswith(f"consensus_harness.kinds entry point k0 = {value}") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_an_entry_point_cannot_replace_a_registered_kind(monkeypatch):
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda **_: importlib.metadata.EntryPoints(
            [
                importlib.metadata.EntryPoint(
                    name="audio", value="tests.spec.test_kinds:AUDIO_AGAIN", group=ENTRY_POINT_GROUP
                )
            ]
        ),
    )
    registry = KindRegistry()
    registry.add(KINDS.get("audio"))
    with pytest.raises(UnknownName, match="task kind 'audio' is already registered"):
        registry.get("audio")


AUDIO_AGAIN = KINDS.get("audio").model_copy(update={"engine": "tests.spec.test_kinds:NoSeededEngine"})


# --- the Engine protocol --------------------------------------------------------------------
def test_every_registered_engine_and_the_toy_engine_follow_the_protocol(toy):
    from harness.engines.node_runner import NodeRunnerEngine
    from tests.execution.toy_kind import ToyTask

    for name in KINDS.names():
        assert engine_problem(KINDS.engine(name)) is None, name
    assert engine_problem(NodeRunnerEngine) is None  # the network runner's engine, checked as a class
    engine, task = KINDS.engine("toy"), ToyTask(text="hi", seed=5)
    assert isinstance(engine, ToyEngine)
    cold = engine.run(engine.load(task, "cpu"), task, "cpu", (), seeded=True)  # how a cold cell calls it
    assert cold.response == engine.run(engine.load(task, "cpu"), task, "cpu").response


def test_an_engine_without_seeded_is_refused_when_resolved(toy, monkeypatch):
    monkeypatch.setenv("HARNESS_ENGINES", "toy=tests.spec.test_kinds:NoSeededEngine")
    with pytest.raises(EngineMismatch) as err:
        KINDS.engine("toy")
    assert str(err.value) == (
        "engine tests.spec.test_kinds:NoSeededEngine of task kind 'toy' does not follow the "
        "Engine protocol (harness.spec.kinds.Engine): run() lacks the parameter seeded"
    )


def test_the_protocol_check_names_what_is_missing():
    class NoRun:
        def load(self, task, device): ...

    class ShortLoad:
        def load(self, task): ...

        def run(self, loaded, task, device, neighbours=(), seeded=False): ...

    class Flexible:
        def load(self, *args): ...

        def run(self, *args, **kwargs): ...

    assert engine_problem(NoRun()) == "has no run() method"
    assert engine_problem(ShortLoad()) == "load() takes 1 of the positional parameters (task, device)"
    assert engine_problem(Flexible()) is None


# --- validators, network rule, inference, node runner: read from the spec ------------------
def test_validator_rules_are_the_named_validator_rules():
    assert typing.get_args(NamedValidator.model_fields["rule"].annotation) == VALIDATOR_RULES


def test_a_plugin_kind_can_name_a_validator(toy):
    doc = _toy_matrix(validators={"toy": {"rule": "tokens", "false_accept": 0.0, "false_reject": 0.0}})
    assert matrix_from_doc(doc).spec.validators["toy"].rule == "tokens"


def test_a_validator_for_no_kind_or_a_rule_the_kind_lacks_is_one_line():
    named = {"rule": "composite", "false_accept": 0.0, "false_reject": 0.0}
    with pytest.raises(MatrixError) as err:
        matrix_from_doc(
            {
                **_toy_matrix(validators={"nope": named}),
                "tasks": [
                    {"name": "a", "task": {"messages": [{"role": "user", "content": "hi"}], "model": "tiny:gpt2"}}
                ],
            }
        )
    assert "$.validators: Value error, 'nope' is no task kind; available: audio, gpt, audioldm, chain" in str(err.value)
    with pytest.raises(MatrixError, match="gpt: rule 'composite' cannot judge gpt tasks; one of tokens, replay"):
        matrix_from_doc(
            {
                **_toy_matrix(validators={"gpt": named}),
                "tasks": [
                    {"name": "a", "task": {"messages": [{"role": "user", "content": "hi"}], "model": "tiny:gpt2"}}
                ],
            }
        )


def test_network_rule_comes_from_the_kind(monkeypatch):
    assert network_rule("gpt")[0] == "result_hash" and network_rule("audio")[0] == "composite"
    assert network_rule("unregistered") == ("result_hash", "proposed: sha256 of the result")
    monkeypatch.setattr(KINDS, "_entries", {**KINDS._entries, "toy-full": TOY_FULL})
    assert network_rule("toy-full") == ("tokens", "proposed: equal echoes")


def test_kind_inference_consults_the_specs(monkeypatch):
    assert [
        infer_kind(d)
        for d in (
            {"prompt": "x"},
            {"messages": []},
            {"text_stage": {}, "messages": []},
            {"num_inference_steps": 2},
            {"messages": [], "negative_prompt": ""},
        )
    ] == ["audio", "gpt", "chain", "audioldm", "gpt"]
    monkeypatch.setattr(KINDS, "_entries", {**KINDS._entries, "toy-full": TOY_FULL})
    assert infer_kind({"text": "hello"}) == "toy-full" and parse_task({"text": "hello"}).text == "hello"
    no_fallback = {n: s.model_copy(update={"fallback": False}) for n, s in KINDS._entries.items()}
    monkeypatch.setattr(KINDS, "_entries", no_fallback)
    with pytest.raises(TaskError, match=r"^\$: no task kind recognises this document; name its kind"):
        infer_kind({"prompt": "x"})


def test_node_runner_support_comes_from_the_kind(monkeypatch):
    assert node_runner_refusal("audio", {"unconditional": True}).startswith("cannot run unconditional")
    assert node_runner_refusal("audio", {"prompt": "x"}) is None
    assert node_runner_refusal("chain", {}) == (
        "runs audio and gpt tasks only (the network's runners); this is a chain task"
    )
    monkeypatch.setattr(KINDS, "_entries", {**KINDS._entries, "toy-full": TOY_FULL})
    assert node_runner_refusal("toy-full", {"text": ""}) is None
    assert "the network's toy-full runner" in node_runner_refusal("toy-full", {"text": "hi"})


# --- one copy of each cell fact ---------------------------------------------------------------
def _digest(cells: list[Cell]) -> str:
    return hashlib.sha256("\n".join(f"{c.cell_id} {c.spec_hash} {c.config_id}" for c in cells).encode()).hexdigest()


@pytest.mark.parametrize(
    "name,count,digest",
    [
        ("smoke.toml", 288, "3054ff6a527704171ba7ebf1bc636098e9eadccf3dc04c212ef823eb9dd3e1e9"),
        ("kinds.toml", 48, "ee19fb9f7a45b367918e95f037babf0167a756d9d2c1b0d85d354dc42ac23a9a"),
    ],
)
def test_cell_ids_spec_hashes_and_config_ids_are_what_stored_runs_hold(name, count, digest):
    """Pinned from the harness before the task document became the one copy of a cell's seed,
    dtype and quantization: stored runs and their resumes are keyed by these strings."""
    cells = expand(load_matrix(ROOT / "matrices" / name), ["cpu", "cuda:0"])
    assert (len(cells), _digest(cells)) == (count, digest)


def test_the_task_document_is_the_one_copy_of_seed_dtype_and_quantization():
    cells = expand(load_matrix(ROOT / "matrices" / "kinds.toml"))
    chain = next(c for c in cells if c.kind == "chain")
    assert set(chain.settings).isdisjoint({"seed", "dtype", "quantize_bits"})
    for stage in ("text_stage", "audio_stage"):  # a chain: the axes set every stage, the first one is read
        assert chain.task_doc[stage]["seed"] == chain.axes.seed and chain.task_doc[stage]["dtype"] == chain.axes.dtype
    assert KINDS.get("chain").task_settings(chain.task_doc) == {
        "dtype": chain.axes.dtype,
        "quantize_bits": None,
        "seed": chain.axes.seed,
    }
    with pytest.raises(ValueError, match="seed belong to the task document, not the settings"):
        Cell("a", "audio", chain.task_doc, {**chain.settings, "seed": 1})


def test_a_plugin_kind_expands_reading_its_settings_through_its_spec(toy):
    cells = expand(matrix_from_doc(_toy_matrix(axes={"seed": [3], "dtype": ["float32"]})))
    assert [c.cell_id for c in cells] == ["echo/float32/qnone/seed3/cpu/tauto/b1/pon/warm/w0/r0"]
    assert cells[0].task_doc["seed"] == 3 and cells[0].axes.dtype == "float32"


def test_a_kind_spec_names_only_known_rules():
    with pytest.raises(ValueError, match="unknown validator rule 'bitwise'; one of tokens, tolerance"):
        KindSpec.model_validate({**TOY.model_dump(), "validator_rules": ["bitwise"]})
    with pytest.raises(ValueError, match="unknown rule 'sha1'; one of result_hash"):
        KindSpec.model_validate({**TOY.model_dump(), "network_rule": ["sha1", "x"]})
