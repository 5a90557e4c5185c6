"""Text (GPT): how token ids are teacher-forced (one forward over prompt + tokens, generate's
padding after an end of sequence), the text stage, and the replayer of the ``gpt`` kind.

Why here and not in a kind branch: the ``gpt`` KindSpec names ``TEXT`` (below) as its
replayer; a chain's text stage is checked by the same ``text_stage``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from harness.engines.draws import NotReplayable
from harness.execution.replay.checker import Checker, Plan
from harness.execution.replay.stage import Prepared, prepare, run_stage
from harness.execution.replay.start import start_state
from harness.execution.replay.trace import Candidate, Options, ReplayTrace, StageTrace


class TextTeacher:
    """Token ids (rows, new tokens), padded after each row's end of sequence."""

    def enter(self, model: Any, call: dict[str, Any], hook: Callable[..., Any]) -> None:
        model.generate(**call, custom_generate=hook)  # GenerationMixin.generate calls custom_generate(self, ...)

    def plan(self, prep: Prepared, token_ids: np.ndarray) -> tuple[Plan | None, Any, str | None]:
        import torch

        rows = int(prep.input_ids.shape[0])
        prompt = int(prep.input_ids.shape[1])
        max_new = int(prep.gen.max_length) - prompt
        eos = _eos_set(prep.gen)
        pad = int(prep.gen._pad_token_tensor) if prep.gen._pad_token_tensor is not None else next(iter(eos), 0)
        vocab = int(prep.model.config.vocab_size)
        tok = np.asarray(token_ids)
        if tok.ndim != 2 or tok.shape[0] != rows:
            return None, None, f"token ids have shape {list(tok.shape)}, expected ({rows}, new tokens)"
        width = 0
        lengths = []
        for r, row in enumerate(tok):
            n = int(np.argmax(row < 0)) if (row < 0).any() else len(row)
            if (row[n:] >= 0).any():
                return None, None, f"row {r}: token ids after its padding"
            ids = row[:n]
            if n == 0:
                return None, None, f"row {r}: no token at all (generate gives each row one at least)"
            if ((ids < 0) | (ids >= vocab)).any():
                return None, None, f"row {r}: a token id outside 0..{vocab - 1}"
            stops = [i for i, x in enumerate(ids.tolist()) if x in eos]
            if stops and stops[0] != n - 1:
                return None, None, f"row {r}: tokens after its end of sequence"
            lengths.append((n, bool(stops)))
            width = max(width, n)
        if width > max_new:
            return None, None, f"{width} new tokens where the task allows {max_new}"
        for r, (n, ended) in enumerate(lengths):
            if not ended and not (n == width == max_new):
                return (
                    None,
                    None,
                    (
                        f"row {r} stops after {n} tokens without an end of sequence (the task generates up "
                        f"to {max_new}): truncated"
                    ),
                )
        cand = torch.full((width, rows), pad, dtype=torch.long)
        valid = torch.zeros((width, rows), dtype=torch.bool)
        for r, (n, _) in enumerate(lengths):
            cand[:n, r] = torch.as_tensor(tok[r, :n], dtype=torch.long)
            valid[:n, r] = True
        plan = Plan(
            cand=cand,
            valid=valid,
            fill=torch.full((width, rows), pad, dtype=torch.long),
            index=torch.arange(width)[:, None].expand(width, rows).contiguous(),
        )
        return plan, cand.T.contiguous(), None

    def one_pass(self, prep: Prepared, tokens: Any, checker: Checker) -> None:
        import torch

        model, mk = prep.model, prep.model_kwargs
        prompt = prep.input_ids
        device = prompt.device
        width = checker.plan.steps
        full = torch.cat([prompt, tokens[:, : width - 1].to(device)], dim=-1) if width > 1 else prompt
        mask = mk.get("attention_mask")
        if mask is not None:
            mask = torch.cat(
                [mask, torch.ones((mask.shape[0], full.shape[1] - mask.shape[1]), dtype=mask.dtype, device=device)],
                dim=-1,
            )
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        else:
            positions = torch.arange(full.shape[1], device=device)[None].expand(full.shape[0], -1)
        with torch.inference_mode():
            logits = model(
                input_ids=full, attention_mask=mask, position_ids=positions, use_cache=False, return_dict=True
            ).logits
            ids = prompt
            p = prompt.shape[1]
            for t in range(width):
                col = checker.step(ids, logits[:, p - 1 + t].to(dtype=torch.float32))
                ids = torch.cat([ids, col[:, None]], dim=-1)


def _eos_set(gen: Any) -> set[int]:
    eos = getattr(gen, "_eos_token_tensor", None)
    if eos is None:
        eos = gen.eos_token_id
    if eos is None:
        return set()
    if hasattr(eos, "tolist"):
        eos = eos.tolist()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


TEACHER = TextTeacher()


def text_stage(
    task: Any,
    token_ids: np.ndarray | None,
    response: dict[str, Any] | None,
    loaded: Any,
    device: str,
    state: Any,
    opts: Options,
    stage: str = "text",
) -> StageTrace:
    """One text stage: its token ids replayed, and the response the one the runner builds from them."""
    from harness.digests import digest_json
    from harness.engines.textgen import TextgenEngine, resolved_generation_config, runner_response

    if token_ids is None:
        return StageTrace(stage=stage, path="none", problem="the candidate sent no token ids")
    eng = TextgenEngine()
    model, tokenizer = loaded.objects["model"], loaded.objects["tokenizer"]
    enc = eng.encode(loaded, [task], device)
    gen, kwargs = resolved_generation_config(model, task)
    if kwargs.get("stop_strings"):
        raise NotReplayable("stop strings are not replayed (the network's runner fails such tasks)")
    prep = prepare(TEACHER, model, {**enc, "generation_config": gen})
    trace, rows = run_stage(stage, TEACHER, prep, np.asarray(token_ids), state, opts)
    if trace.problem is None:
        built = runner_response(
            task.model, tokenizer, rows.numpy().astype(np.int64), int(enc["attention_mask"][0].sum())
        )
        if response is None:
            trace.problem = "the candidate sent no response"
        elif digest_json(built) != digest_json(response):
            trace.problem = "the response is not the one the runner builds from these token ids"
    return trace


class TextReplayer:
    """A text kind: one stage, its token ids teacher-forced, its response built from them."""

    stages = (("text", "token_ids"),)

    def support(self, task: Any, device: str) -> str | None:
        return None

    def replay(self, kind: str, task: Any, candidate: Candidate, device: str, cache: Any, opts: Options) -> ReplayTrace:
        from harness.engines.base import get_engine

        loaded, _ = cache.get(get_engine(kind), task, device)
        state = start_state(kind, task, device, opts.start)
        stage = text_stage(task, candidate.arrays.get("token_ids"), candidate.response, loaded, device, state, opts)
        return ReplayTrace(kind=kind, start=opts.start, stages=[stage])


TEXT = TextReplayer()
