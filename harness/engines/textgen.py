"""GPT tasks, answered exactly as the network's text runner answers them.

The prompt is the model's chat template (``add_generation_prompt``, the task's tools and
template_args) or, for a model without one, the message contents joined by newlines, tokenized
as the runner's text-generation pipeline tokenizes a string (the tokenizer's default special
tokens). Unset generation fields take the runner's defaults (one sequence, 256 new tokens)
over the model's generation config. The response is what gpt-task 3.2.0 computes, field for
field: per returned row (padded to the longest row, as generate returns them) finish_reason
``stop`` when its last token is the tokenizer's EOS, else ``length``; the text of the row
decoded with special tokens skipped and tokenization spaces cleaned up, stripped; and
``completion_tokens`` summed over rows *including their padding* (two rows of which one
stopped early count twice the longer row's length). Token ids are kept as well, cut after
the first EOS: equal tokens with different text would point at decoding, not the model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from harness.engines.base import LoadedModel, Stopwatch
from harness.models.loading import (
    count_quantized,
    load_kwargs,
    load_pretrained,
    read_config,
    resolve_dtype,
    resolve_model,
)
from harness.outputs import Output
from harness.spec.tasks import GPTTask, Message

if TYPE_CHECKING:  # torch and transformers are imported where they are used
    import torch
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

NETWORK_DEFAULTS: dict[str, Any] = {"num_return_sequences": 1, "max_new_tokens": 256}


def render_prompt(tokenizer: PreTrainedTokenizerBase, task: GPTTask) -> str:
    messages: list[dict[str, Any]] = [
        {
            "role": m.role,
            "content": m.text(),
            **({"tool_calls": m.tool_calls} if m.tool_calls else {}),
            **({"tool_call_id": m.tool_call_id} if m.tool_call_id else {}),
        }
        for m in task.messages
    ]
    if getattr(tokenizer, "chat_template", None):
        # transformers annotates tools as list[dict | Callable]; a list[dict] is one, but list is invariant
        rendered = tokenizer.apply_chat_template(
            messages,
            tools=task.tools,  # type: ignore[arg-type]  # list[dict] is a list[dict | Callable] (invariant list)
            add_generation_prompt=True,
            tokenize=False,
            **(task.template_args or {}),
        )
        if not isinstance(rendered, str):  # tokenize=False renders text; the library types every return form
            raise TypeError(f"apply_chat_template(tokenize=False) returned {type(rendered).__name__}, not str")
        return rendered
    return "\n".join(m["content"] for m in messages)


def resolved_generation_config(model: PreTrainedModel, task: GPTTask) -> tuple[GenerationConfig, dict[str, Any]]:
    """gpt-task's ``resolve_generation_config``: the runner's defaults and the task's fields set
    on a copy of the model's generation config, ``max_length`` cleared (pad stays as the model
    has it: ``generate`` falls back to EOS itself)."""
    kwargs = dict(NETWORK_DEFAULTS)
    if task.generation_config is not None:
        kwargs.update(task.generation_config.model_dump(exclude_none=True))
    gen = copy.deepcopy(model.generation_config)
    for key, value in kwargs.items():
        setattr(gen, key, value)
    gen.max_length = None
    return gen, kwargs


class _FirstToken:
    """A streamer that notes when the first generated token arrives (time to first token)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2 and self.first_at is None:  # the first put is the prompt
            self.first_at = time.perf_counter()

    def end(self) -> None:
        pass


class TextgenEngine:
    kind = "gpt"

    def load(self, task: GPTTask, device: str) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        resolved = resolve_model(task.model)
        config = read_config(resolved.path)
        dtype = resolve_dtype(task.dtype, config)
        model = load_pretrained(AutoModelForCausalLM, resolved.path, **load_kwargs(dtype, task.quantize_bits, device))
        if task.quantize_bits is None:
            # transformers wraps PreTrainedModel.to in functools.wraps, whose typeshed type does not bind self
            model = model.to(device)  # type: ignore[arg-type]  # wraps-decorated: self left unbound
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        meta = {
            "model_path_source": resolved.source,
            "weights_sha256": resolved.weights_sha256,
            "resolved_dtype": dtype,
            "quantization": count_quantized(model, task.quantize_bits).as_dict(),
            "max_positions": int(
                getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 0
            ),
        }
        return LoadedModel(
            key=(task.model, task.dtype, task.quantize_bits, device),
            objects={"model": model, "tokenizer": tokenizer},
            meta=meta,
        )

    @staticmethod
    def encode(loaded: LoadedModel, batch: Sequence[GPTTask], device: str) -> dict[str, Any]:
        """The tokenized prompts of a batch (left-padded), as ``generate`` receives them; shared
        with harness.execution.replay, which must make exactly this call."""
        tokenizer = loaded.objects["tokenizer"]
        enc = tokenizer([render_prompt(tokenizer, t) for t in batch], return_tensors="pt", padding=True)
        return {k: v.to(device) for k, v in enc.items()}

    def run(
        self, loaded: LoadedModel, task: GPTTask, device: str, neighbours: Sequence[GPTTask] = (), seeded: bool = False
    ) -> Output:
        import torch

        from harness.determinism import seed_everything

        model, tokenizer = loaded.objects["model"], loaded.objects["tokenizer"]
        watch = Stopwatch(device)
        batch = [task, *neighbours]
        with watch.section("encode_s"):
            enc = self.encode(loaded, batch, device)
        gen, kwargs = resolved_generation_config(model, task)
        extra = {"tokenizer": tokenizer} if kwargs.get("stop_strings") else {}
        streamer = (
            _FirstToken() if len(batch) == 1 and gen.num_beams in (None, 1) and gen.num_return_sequences == 1 else None
        )
        if not seeded:
            seed_everything(task.seed)
        with torch.inference_mode(), watch.section("generate_s"):
            start = time.perf_counter()
            sequences = model.generate(**enc, generation_config=gen, streamer=streamer, **extra)
        prompt_len = enc["input_ids"].shape[1]
        n = int(gen.num_return_sequences or 1)
        rows = sequences[:n, prompt_len:].to("cpu").numpy().astype(np.int64)  # the target's choices
        with watch.section("decode_s"):
            response = runner_response(task.model, tokenizer, rows, int(enc["attention_mask"][0].sum()))
            token_ids = token_id_rows(rows, _eos_ids(gen, tokenizer))
        timings = dict(watch.times)
        if streamer is not None and streamer.first_at is not None:
            timings["time_to_first_token_s"] = streamer.first_at - start
        return Output(
            kind="gpt",
            arrays={"token_ids": token_ids},
            response=response,
            discrete="token_ids",
            steps="token_ids",
            timings=timings,
            meta={"generation_kwargs": kwargs, "batch_size": len(batch), "new_tokens": int((token_ids >= 0).sum())},
        )


def runner_response(
    model: str, tokenizer: PreTrainedTokenizerBase, rows: npt.NDArray[np.int64], prompt_tokens: int
) -> dict[str, Any]:
    """The response gpt-task 3.2.0 builds from generate's rows (the generated part of each,
    padded as generate pads them): see the module docstring for each field's rule."""
    eos = tokenizer.eos_token_id
    choices: list[dict[str, Any]] = []
    completion = 0
    for index, row in enumerate(rows):
        ids = [int(t) for t in row]
        completion += len(ids)
        decoded = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        if not isinstance(decoded, str):  # one row of ids decodes to one string; the library types both forms
            raise TypeError(f"tokenizer.decode of one row returned {type(decoded).__name__}, not str")
        text = decoded.strip()
        choices.append(
            {
                "finish_reason": "stop" if ids and ids[-1] == eos else "length",
                "message": {"role": "assistant", "content": text},
                "index": index,
            }
        )
    return {
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    }


def token_id_rows(rows: npt.NDArray[np.int64], eos: set[int]) -> npt.NDArray[np.int64]:
    """Each row's generated ids up to and including its first EOS, padded with -1."""
    kept: list[list[int]] = []
    for row in rows:
        ids = [int(t) for t in row]
        stop_at = next((i for i, t in enumerate(ids) if t in eos), None)
        kept.append(ids if stop_at is None else ids[: stop_at + 1])
    width = max((len(k) for k in kept), default=0)
    token_ids = np.full((len(kept), width), -1, dtype=np.int64)
    for i, ids in enumerate(kept):
        token_ids[i, : len(ids)] = ids
    return token_ids


def _eos_ids(gen: GenerationConfig, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def neighbours(task: GPTTask, batch_size: int) -> list[GPTTask]:
    """Batch neighbours of a GPT task: the same settings with another user message."""
    from harness.engines.base import neighbour_prompts

    return [
        task.model_copy(update={"messages": [_user_message(task.model, prompt)]})
        for prompt in neighbour_prompts(batch_size)
    ]


def _user_message(model: str, prompt: str) -> Message:
    """``prompt`` as a GPT task's user message, validated as a task document's would be."""
    from harness.spec.tasks import parse_task

    parsed = parse_task({"model": model, "messages": [{"role": "user", "content": prompt}]})
    if not isinstance(parsed, GPTTask):  # a messages document is a GPT task (unless a plugin kind claims it)
        raise TypeError(f"a neighbour prompt parsed as {type(parsed).__name__}, not a GPT task")
    return parsed.messages[0]
