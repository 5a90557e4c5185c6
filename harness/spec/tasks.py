"""Task definitions: exactly the network's JSON task documents, validated strictly.

Why strict: a node that silently ignores a misspelt field (``temprature``) runs a different
task than the one the network asked for, and consensus fails for reasons nobody can see.
Every model forbids unknown fields and non-finite numbers; limits keep hostile documents
(10 MB prompts, absurd token counts) from turning into hangs or out-of-memory crashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.digests import StrictJSONError, strict_json_loads
from harness.errors import HarnessError
from harness.spec.kinds import KINDS
from harness.store.files import (
    read_input_file as read_input_file,  # one bounded reader for every input file (re-exported)
)

# Documented limits (docs/tasks.md "Limits"). They bound what one task may ask of a worker.
MAX_PROMPT_CHARS = 100_000
MAX_MESSAGES = 256
MAX_NEW_TOKENS = 65_536
MAX_RETURN_SEQUENCES = 16
MAX_SEED = 2**32 - 1  # numpy's seed range; the network's runners call set_seed(seed)
MAX_TASK_FILE_BYTES = 16 * 1024 * 1024

Dtype = Literal["float16", "bfloat16", "float32", "auto"]
QuantizeBits = Literal[4, 8] | None
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="0 <= seed < 2**32")]
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class StrictModel(BaseModel):
    """Unknown fields and NaN/inf are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


MAX_FREEFORM_DEPTH = 32


def _bounded_depth(value: Any, depth: int = 0) -> Any:
    """Free-form JSON (tools, template_args, tool_calls) nested at most MAX_FREEFORM_DEPTH."""
    if depth > MAX_FREEFORM_DEPTH:
        raise ValueError(f"nested deeper than {MAX_FREEFORM_DEPTH} levels")
    if isinstance(value, dict):
        for v in value.values():
            _bounded_depth(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _bounded_depth(v, depth + 1)
    return value


FreeForm = Annotated[dict[str, Any], AfterValidator(_bounded_depth)]


class AudioGenerationConfig(StrictModel):
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)] | None = None
    do_sample: bool | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    guidance_scale: Annotated[float, Field(ge=0.0, le=100.0)] | None = None


class AudioPrompt(StrictModel):
    """Audio to continue (MusicGen audio-prompted generation): a WAV path or base64 WAV bytes.

    Its canonical digest is sha256 over the decoded float32 samples (see harness.digests),
    so the same sound gives the same digest whether it came as a path or as base64.
    """

    wav_path: str | None = None
    base64: Annotated[str, Field(max_length=8 * 1024 * 1024)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AudioPrompt:
        if (self.wav_path is None) == (self.base64 is None):
            raise ValueError("give exactly one of wav_path or base64")
        if self.wav_path is not None and "\x00" in self.wav_path:
            raise ValueError("wav_path holds a NUL byte, which no file name can")
        return self


class AudioTask(StrictModel):
    """The network's text-to-audio (MusicGen) task, plus the harness extensions
    ``audio_prompt`` (continuation) and ``unconditional`` (no text conditioning)."""

    model: Annotated[str, Field(min_length=1, max_length=512)]
    prompt: Prompt
    generation_config: AudioGenerationConfig | None = None
    seed: Seed = 0
    dtype: Dtype = "auto"
    quantize_bits: QuantizeBits = None
    audio_prompt: AudioPrompt | None = None
    unconditional: bool = False

    @model_validator(mode="after")
    def _unconditional_has_no_prompt(self) -> AudioTask:
        if self.unconditional and (self.prompt or self.audio_prompt):
            raise ValueError("unconditional generation takes an empty prompt and no audio_prompt")
        return self


class TextContentBlock(StrictModel):
    type: Literal["text"]
    text: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]


class ImageContentBlock(StrictModel):
    """Valid in the reference schema; refused by the engine with a named error (no vision model)."""

    type: Literal["image"]
    base64: Annotated[str, Field(min_length=1)]


ContentBlock = Annotated[TextContentBlock | ImageContentBlock, Field(discriminator="type")]


class Message(StrictModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: Prompt | list[ContentBlock] | None = None
    tool_call_id: str | None = None
    tool_calls: list[FreeForm] | None = None

    def text(self) -> str:
        """Plain text of the message (text blocks joined); images are refused earlier."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(b.text for b in self.content if isinstance(b, TextContentBlock))


class GPTGenerationConfig(StrictModel):
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)] | None = None
    stop_strings: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=16)] | None = (
        None
    )
    do_sample: bool | None = None
    num_beams: Annotated[int, Field(ge=1, le=64)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    typical_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    num_return_sequences: Annotated[int, Field(ge=1, le=MAX_RETURN_SEQUENCES)] | None = None


class GPTTask(StrictModel):
    """The network's GPT inference task (``gpt-inference-task.schema.json``)."""

    model: Annotated[str, Field(min_length=1, max_length=512)]
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    tools: list[FreeForm] | None = None
    generation_config: GPTGenerationConfig | None = None
    template_args: FreeForm | None = None
    seed: Seed = 0
    dtype: Dtype = "auto"
    quantize_bits: QuantizeBits = None

    @field_validator("messages")
    @classmethod
    def _no_images(cls, messages: list[Message]) -> list[Message]:
        for i, m in enumerate(messages):
            if isinstance(m.content, list):
                for j, block in enumerate(m.content):
                    if isinstance(block, ImageContentBlock):
                        raise ValueError(
                            f"messages[{i}].content[{j}]: image content is valid for the network "
                            f"but not supported by this harness (no vision model can be built offline)"
                        )
        return messages

    @field_validator("messages")
    @classmethod
    def _bounded_total(cls, messages: list[Message]) -> list[Message]:
        total = sum(len(m.text()) for m in messages)
        if total > MAX_PROMPT_CHARS:
            raise ValueError(f"messages hold {total} characters in all; the limit is {MAX_PROMPT_CHARS}")
        return messages


class AudioLDMTask(StrictModel):
    """Diffusion text-to-audio (AudioLDM), as in the PaddleMIX music-generation seed."""

    model: Annotated[str, Field(min_length=1, max_length=512)]
    prompt: Prompt
    negative_prompt: Prompt | None = None
    num_inference_steps: Annotated[int, Field(ge=1, le=1000)] = 20
    audio_length_in_s: Annotated[float, Field(gt=0.0, le=60.0)] = 5.0
    guidance_scale: Annotated[float, Field(ge=0.0, le=100.0)] = 2.5
    num_waveforms_per_prompt: Annotated[int, Field(ge=1, le=8)] = 1
    seed: Seed = 0
    dtype: Dtype = "auto"
    quantize_bits: QuantizeBits = None


class ChainTask(StrictModel):
    """Text -> LLM -> music: a GPT stage rewrites a description into a music prompt that an
    audio stage renders. ``prompt_template`` must contain ``{description}``; the audio
    stage's prompt is the GPT stage's first choice."""

    description: Prompt
    prompt_template: Prompt = (
        "Given the scene description in the following paragraph, please create a musical "
        "style sentence that fits the scene. Description: {description}."
    )
    text_stage: GPTTask
    audio_stage: Annotated[AudioTask | AudioLDMTask, Field(union_mode="left_to_right")]

    @field_validator("prompt_template")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{description}" not in v:
            raise ValueError("prompt_template must contain {description}")
        return v


Task = AudioTask | GPTTask | AudioLDMTask | ChainTask  # the built-in kinds (harness.spec.kinds lists every kind)


# Fields this harness once accepted and no longer does, with why (shown instead of "unknown field").
REMOVED_FIELDS = {
    "generation_defaults": "removed: a node passes only the task's generation_config and the model's own "
    "generation config fills the rest, so there is nothing to choose; delete the field",
}


class TaskError(HarnessError, ValueError):
    """A task document that cannot be used; ``str()`` is one line per problem, with its JSON path."""


def infer_kind(doc: Any) -> str:
    """The network sends no 'kind' field: recognise the task by the fields it carries (each
    kind's ``recognised_by``; a document with none of them is the fallback kind, audio)."""
    if not isinstance(doc, dict):
        raise TaskError(f"$: a task must be a JSON object, got {type(doc).__name__}")
    kind = KINDS.infer(doc)
    if kind is None:
        raise TaskError(f"$: no task kind recognises this document; name its kind (one of {', '.join(KINDS.names())})")
    return kind


def _json_path(loc: tuple[Any, ...]) -> str:
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in (
            "TextContentBlock",
            "ImageContentBlock",
            "str",
            "list[tagged-union[TextContentBlock,ImageContentBlock]]",
            "constrained-str",
            "function-after[_exactly_one(), AudioPrompt]",
        ):
            continue  # union branch names are pydantic internals, not JSON paths
        elif isinstance(part, str) and ("[" in part or "(" in part):
            continue
        elif isinstance(part, str) and part.isidentifier() and part.isascii():
            path += f".{part}"
        else:  # odd keys (control characters, spaces) stay on one line, escaped
            path += f"[{json.dumps(str(part), ensure_ascii=True)}]"
    return path


def format_validation_error(err: ValidationError, limit: int = 20) -> str:
    """One line per problem: ``$.generation_config.temprature: unknown field``."""
    lines = []
    seen = set()
    for e in err.errors(include_url=False):
        path = _json_path(tuple(e["loc"]))
        if e["type"] == "extra_forbidden":
            field = e["loc"][-1] if e["loc"] else None
            msg = (
                REMOVED_FIELDS[field]
                if isinstance(field, str) and field in REMOVED_FIELDS
                else "unknown field (not supported by this harness; check the spelling)"
            )
        else:
            msg = e["msg"]
            if "input" in e and e["type"] in ("literal_error", "enum") and not isinstance(e["input"], (dict, list)):
                msg += f" (got {str(e['input'])[:40]!r})"
        key = (path, msg)
        if key not in seen:
            seen.add(key)
            lines.append(f"{path}: {msg}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more problems"]
    return "\n".join(lines)


def first_validation_problem(err: ValidationError) -> str:
    """The first problem of ``err`` in one line, with how many more there are."""
    first = format_validation_error(err).splitlines()[0]
    count = len(err.errors())
    return first + (f" (and {count - 1} more)" if count > 1 else "")


def parse_task(doc: Any, kind: str | None = None) -> Task:
    """Validate a decoded JSON document as a task of ``kind`` (inferred when None)."""
    kind = kind or infer_kind(doc)
    if kind not in KINDS:
        raise TaskError(f"$: unknown task kind {kind!r} (expected one of {', '.join(KINDS.names())})")
    try:
        # a plugin kind's model is outside the built-in union; callers treat it as its kind's task
        return cast("Task", KINDS.get(kind).task_class().model_validate(doc))
    except ValidationError as err:
        raise TaskError(format_validation_error(err)) from None
    except (RecursionError, ValueError, TypeError) as err:  # pathological nesting, odd inputs
        raise TaskError(f"$: not a valid {kind} task ({type(err).__name__}: {str(err)[:200]})") from None


def loads_task_json(text: str | bytes) -> Any:
    """Decode task JSON; NaN/Infinity (which Python's json accepts) and duplicate keys are refused."""
    try:
        return strict_json_loads(text)
    except StrictJSONError as err:
        if "nested too deeply" in str(err):
            raise TaskError(f"$: {err}") from None
        raise TaskError(f"$: not valid JSON ({err})") from None
    except ValueError as err:
        raise TaskError(f"$: not valid JSON ({err})") from None


def load_task_file(path: str | Path, kind: str | None = None) -> Task:
    """Read and validate a task file, with the file name in every error."""
    path = Path(path)
    raw = read_input_file(path, MAX_TASK_FILE_BYTES, TaskError)
    try:
        return parse_task(loads_task_json(raw), kind)
    except TaskError as err:
        raise TaskError("\n".join(f"{path}: {line}" for line in str(err).splitlines())) from None


def task_kind(task: Task) -> str:
    return KINDS.of_task(task)


def task_to_doc(task: Task) -> dict[str, Any]:
    """The task as the JSON document a node would receive (defaults included, so digests of
    two equivalent documents agree)."""
    return task.model_dump(mode="json")
