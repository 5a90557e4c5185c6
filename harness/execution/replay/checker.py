"""The checker: processors, softmax, the seed's draws, the pick and the gap, one step at a time.

Why separate from the preparation: the arithmetic that decides whether a candidate's token is
the seed's (and how far a flip was from the boundary) is the same for every kind and stage;
only how a stage's call is prepared and its tokens laid out (harness.execution.replay.stage
and the per-kind modules) differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.engines.draws import Draws, pick
from harness.execution.replay.trace import Flip, StepDetail

#: processors that only filter: they keep a set of tokens unchanged and set the rest to -inf
FILTERS = frozenset(
    {
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "MinPLogitsWarper",
        "TypicalLogitsWarper",
        "EpsilonLogitsWarper",
        "EtaLogitsWarper",
        "TopHLogitsWarper",
    }
)


@dataclass
class Plan:
    """Per generation step: the candidate's token per row, whether that row's token is checked
    (kept in the output), and what generate appends where it is not (-1: its own pick)."""

    cand: Any  # (steps, rows) long tensor
    valid: Any  # (steps, rows) bool tensor
    fill: Any  # (steps, rows) long tensor
    index: Any  # (steps, rows) long: the frame / token position of each row's token

    @property
    def steps(self) -> int:
        return int(self.cand.shape[0])


def _apply(processors: Any, ids: Any, scores: Any) -> Any:
    """``LogitsProcessorList.__call__`` without its per-call signature inspection (a third of
    a replay's time at 512 steps): these processors take (input_ids, scores) only."""
    for processor in processors:
        scores = processor(ids, scores)
    return scores


class Checker:
    #: steps whose slack (how near a matched position came to another pick) is computed at once
    SLACK_CHUNK = 32

    def __init__(self, processors: Any, plan: Plan, draws: Draws | None, detail_steps: Sequence[int] = ()) -> None:
        self.processors = list(processors)
        self.shapers = [p for p in self.processors if type(p).__name__ not in FILTERS]
        self.plan, self.draws = plan, draws
        self.detail_steps = set(detail_steps)
        self.trace_flips: list[Flip] = []
        self.details: dict[int, StepDetail] = {}
        self.positions = 0
        self.closest = math.inf
        self.t = 0
        self._pending: list[tuple[Any, Any, Any]] = []  # (scores, draws, matched rows) awaiting the slack computation

    def step(self, ids: Any, raw: Any) -> Any:
        """Check step ``self.t`` given the ids so far and the raw next-token logits (float32);
        returns the column ``generate`` appends."""
        import torch

        t = self.t
        cand, valid, fill = self.plan.cand[t], self.plan.valid[t], self.plan.fill[t]
        scores = _apply(self.processors, ids, raw)
        rows, vocab = scores.shape
        if self.draws is not None:
            draws = self.draws.next(rows, vocab)
            picked = pick(torch.softmax(scores, dim=-1), draws)
        else:
            draws, picked = None, torch.argmax(scores, dim=-1)
        self.positions += int(valid.sum())
        wrong = valid & (picked != cand)
        matched = valid & ~wrong
        if vocab > 1 and bool(matched.any()):
            self._pending.append((scores, draws, matched))
            if len(self._pending) >= self.SLACK_CHUNK:
                self._flush()
        if bool(wrong.any()) or t in self.detail_steps:
            log_e = None if draws is None else torch.log(draws.double())
            shaped = _apply(self.shapers, ids, raw).double()
            kept = torch.isfinite(scores)
            for r in torch.nonzero(wrong).flatten().tolist():
                self.trace_flips.append(
                    Flip(
                        step=t,
                        row=r,
                        index=int(self.plan.index[t, r]),
                        candidate=int(cand[r]),
                        sampled=int(picked[r]),
                        gap=_gap(
                            shaped[r], kept[r], log_e[r] if log_e is not None else None, int(picked[r]), int(cand[r])
                        ),
                    )
                )
            if t in self.detail_steps:
                self.details[t] = StepDetail(
                    step=t,
                    candidate=cand.numpy().copy(),
                    sampled=picked.numpy().copy(),
                    valid=valid.numpy().copy(),
                    scores=shaped.numpy(),
                    kept=kept.numpy(),
                    log_draws=None if log_e is None else log_e.numpy(),
                )
        self.t += 1
        if self.t == self.plan.steps:
            self._flush()
        return torch.where(valid, cand, torch.where(fill >= 0, fill, picked))

    def _flush(self) -> None:
        """The closest call among the pending steps' matched positions: the gap between the
        best and the second-best ``score - log E`` (float32 is plenty for a report figure)."""
        import torch

        if not self._pending:
            return
        scores = torch.stack([s for s, _, _ in self._pending])
        z = scores if self._pending[0][1] is None else scores - torch.log(torch.stack([d for _, d, _ in self._pending]))
        top = torch.topk(z, 2, dim=-1).values
        slack = (top[..., 0] - top[..., 1])[torch.stack([m for _, _, m in self._pending])]
        slack = slack[torch.isfinite(slack)]
        if slack.numel():
            self.closest = min(self.closest, float(slack.min()))
        self._pending.clear()


def _gap(shaped: Any, kept: Any, log_e: Any, sampled: int, candidate: int) -> float:
    """How far the draw was from picking ``candidate`` instead of ``sampled`` (logit units)."""
    import torch

    u_c = float(shaped[candidate])
    if not math.isfinite(u_c):
        return math.inf  # suppressed before filtering (min length, bad words): impossible
    z_v = float(shaped[sampled]) - (float(log_e[sampled]) if log_e is not None else 0.0)
    z_c = u_c - (float(log_e[candidate]) if log_e is not None else 0.0)
    gap = max(0.0, z_v - z_c)
    if not bool(kept[candidate]):  # filtered: it had to climb into the kept set first
        lowest_kept = float(torch.min(torch.where(kept, shaped, torch.full_like(shaped, math.inf))))
        gap = max(gap, lowest_kept - u_c)
    return gap


def gap_between(detail: StepDetail, row: int, mine: int, other: int) -> float:
    """Under this side's distribution at this step: how far its draw was from picking ``other``
    instead of ``mine`` (negative: it would rather have picked ``other``)."""
    u, kept = detail.scores[row], detail.kept[row]
    le = detail.log_draws[row] if detail.log_draws is not None else np.zeros_like(u)
    if not np.isfinite(u[other]):
        return math.inf
    if not np.isfinite(u[mine]):
        return -math.inf
    gap = float((u[mine] - le[mine]) - (u[other] - le[other]))
    if not kept[other]:
        gap = max(gap, float(np.min(np.where(kept, u, np.inf))) - float(u[other]))
    if not kept[mine]:
        gap = min(gap, float(u[mine]) - float(np.min(np.where(kept, u, np.inf))))
    return gap
