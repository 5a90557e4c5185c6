"""One stage checked: its call prepared exactly as ``generate`` prepares it, then its logits,
one teacher-forced pass or forced generation, through the checker.

Why one module for every stage: what differs between MusicGen codes and text token ids (how
``generate`` is entered, how the candidate's tokens lie over the steps, the one-pass forward)
is a ``Teacher`` the per-kind modules give; the paths (one-pass, stepwise, the re-check near
the margin) and the stage's trace are decided here, once.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from harness.engines.draws import Draws, NotReplayable, decoding_problem
from harness.execution.replay.checker import Checker, Plan
from harness.execution.replay.trace import Options, StageTrace


class Stop(Exception):
    """Raised from inside ``generate`` once it has prepared its call (or past the candidate's end)."""


@dataclass
class Prepared:
    model: Any
    input_ids: Any
    processors: Any
    stopping: Any
    gen: Any
    model_kwargs: dict[str, Any]
    run_sample: Any = None  # callable(logits_processor) -> the real sampling loop, with the captured state


class Teacher(Protocol):
    """How one stage's discrete output is teacher-forced (a per-kind fact: MusicGen's codes,
    text token ids)."""

    def enter(self, model: Any, call: dict[str, Any], hook: Callable[..., Any]) -> None:
        """Call ``model.generate(**call)`` so that ``hook`` replaces its sampling loop."""

    def plan(self, prep: Prepared, discrete: np.ndarray) -> tuple[Plan | None, Any, str | None]:
        """(plan, the full token matrix, problem) for the candidate's discrete output."""

    def one_pass(self, prep: Prepared, full: Any, checker: Checker) -> None:
        """Every step's logits from one teacher-forced forward, through ``checker``."""


def prepare(teacher: Teacher, model: Any, call: dict[str, Any]) -> Prepared:
    """Run ``model.generate(**call)`` up to the decoding loop and keep what it prepared (the
    text encoder's outputs with CFG's null half, the delay pattern, the processor list)."""
    import torch

    box: dict[str, Any] = {}

    def hook(*args: Any, **kwargs: Any) -> None:
        input_ids = args[-1]
        box["prepared"] = Prepared(
            model=model,
            input_ids=input_ids,
            processors=kwargs.pop("logits_processor"),
            stopping=kwargs.pop("stopping_criteria"),
            gen=kwargs.pop("generation_config"),
            model_kwargs=kwargs,
        )
        raise Stop

    with torch.inference_mode(), contextlib.suppress(Stop):
        teacher.enter(model, call, hook)
    if "prepared" not in box:
        raise NotReplayable("generate did not reach its sampling loop (another decoding mode)")
    prepared: Prepared = box["prepared"]
    return prepared


def _stepwise_logits(prep: Prepared, checker: Checker, state: Any) -> None:
    """Forced generation: transformers' own loop, a first processor that hands each step's raw
    logits to the checker and a last one that forces the column the checker returns."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    column: dict[str, Any] = {}

    class Record(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if checker.t < checker.plan.steps:
                column["next"] = checker.step(input_ids, scores)
            return scores

    class Force(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            forced = torch.full_like(scores, -math.inf)
            nxt = column.pop("next", None)
            if nxt is None:  # past the candidate's end: generate would go on; stop here
                raise Stop
            forced.scatter_(1, nxt[:, None].to(scores.device), 0.0)
            return forced

    processors = LogitsProcessorList([Record(), *prep.processors, Force()])
    sample = type(prep.model)._sample
    kwargs = dict(prep.model_kwargs)
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.set_rng_state(state)
        with contextlib.suppress(Stop):
            sample(
                prep.model,
                prep.input_ids,
                logits_processor=processors,
                stopping_criteria=prep.stopping,
                generation_config=prep.gen,
                **kwargs,
            )


def one_pass_problem(prep: Prepared) -> str | None:
    """Why one teacher-forced pass does not give generate's logits for this model (None: it
    does, within float noise). Measured (tests/execution/test_replay.py): bitsandbytes 8-bit
    decomposes outlier columns over all the rows of a matmul's input, so a pass over the whole
    sequence quantizes each token otherwise than one token at a time (scores off by 0.12 where
    float32 noise is 6e-6); 4-bit (weights only, float32 compute) is not affected."""
    config = getattr(prep.model, "config", None)
    quant = getattr(config, "quantization_config", None)
    if quant is not None and getattr(quant, "load_in_8bit", False):
        return "bitsandbytes 8-bit quantizes a matmul's activations over all its rows: forced generation instead"
    return None


def run_stage(
    stage: str, teacher: Teacher, prep: Prepared, discrete: np.ndarray, state: Any, opts: Options
) -> tuple[StageTrace, Any]:
    """Check one stage's discrete output against the prepared call; (trace, the full token
    matrix the plan built: MusicGen's delayed sequence, the text rows padded as generate pads)."""
    watch: dict[str, float] = {}
    problem = decoding_problem(prep.gen)
    greedy = not getattr(prep.gen, "do_sample", False)
    if problem and not (greedy and opts.allow_greedy and problem.startswith("greedy")):
        raise NotReplayable(problem)
    started = time.perf_counter()
    plan, full, bad = teacher.plan(prep, discrete)
    if bad:
        return StageTrace(stage=stage, path="none", problem=bad, greedy=greedy), None
    assert plan is not None  # a plan or a problem, never neither
    rows = int(plan.cand.shape[1])
    per_task_rows = rows
    factor = max(1, int(opts.rows_in_draw_factor))

    def checker() -> Checker:
        draws = None if greedy else Draws(state, rows_in_draw=per_task_rows * factor)
        return Checker(prep.processors, plan, draws, opts.detail_steps)

    path = "one-pass" if opts.path == "one-pass" or (opts.path == "auto" and not one_pass_problem(prep)) else "stepwise"
    chk = checker()
    if path == "one-pass":
        teacher.one_pass(prep, full, chk)
    else:
        _stepwise_logits(prep, chk, state)
    watch[path] = time.perf_counter() - started
    band = opts.recheck_band
    if (
        opts.path == "auto"
        and path == "one-pass"
        and band is not None
        and any(band[0] < f.gap <= band[1] for f in chk.trace_flips)
    ):
        again = time.perf_counter()
        chk = checker()
        _stepwise_logits(prep, chk, state)
        path = "stepwise (re-check)"
        watch["stepwise"] = time.perf_counter() - again
    if chk.t < plan.steps:
        return StageTrace(
            stage=stage,
            path=path,
            steps=chk.t,
            positions=chk.positions,
            flips=chk.trace_flips,
            problem=f"generation stopped after {chk.t} of the candidate's {plan.steps} steps",
            seconds=watch,
            greedy=greedy,
        ), full
    return StageTrace(
        stage=stage,
        path=path,
        steps=plan.steps,
        positions=chk.positions,
        flips=chk.trace_flips,
        closest=None if math.isinf(chk.closest) else chk.closest,
        seconds=watch,
        details=chk.details,
        greedy=greedy,
    ), full
