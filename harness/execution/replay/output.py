"""Replay one candidate here: the kind's replayer (its KindSpec names it) on this machine's
copy of the model.

Why through the KindSpec: which kinds are replayed, how and which stages is a per-kind fact
(harness.spec.kinds); nothing here names a kind.
"""

from __future__ import annotations

from typing import Any

from harness.engines.draws import NotReplayable, device_problem, sampler_check
from harness.execution.replay.trace import Candidate, Options, ReplayTrace


def replay_support(kind: str, task: Any, device: str = "cpu") -> str | None:
    """Why this task cannot be replayed, before any model is loaded (None: it may be)."""
    from harness.spec.kinds import KINDS

    replayer = KINDS.replayer(kind)
    if replayer is None:
        covered = ", ".join(KINDS.replayed())
        return (
            f"replay covers {covered} tasks, not {kind} (its KindSpec names no replayer: a model without "
            f"tokens, such as a diffusion model, has none to check)"
        )
    return device_problem(device) or replayer.support(task, device)


def replay_output(
    kind: str,
    task: Any,
    candidate: Candidate,
    *,
    device: str = "cpu",
    cache: Any = None,
    options: Options | None = None,
) -> ReplayTrace:
    """Replay ``candidate`` against ``task`` on this machine (the validator's own model copy)."""
    from harness.engines.base import ModelCache
    from harness.spec.kinds import KINDS

    opts = options or Options()
    why = replay_support(kind, task, device)
    if why:
        raise NotReplayable(why)
    sampler_check()
    replayer = KINDS.replayer(kind)
    assert replayer is not None  # replay_support said why otherwise
    trace: ReplayTrace = replayer.replay(
        kind, task, candidate, device, cache if cache is not None else ModelCache(), opts
    )
    return trace
