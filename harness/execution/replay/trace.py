"""What a replay is given and what it finds: the candidate, the options, the per-stage trace.

Why its own module: these types cross every boundary of a replay (the per-kind preparation
fills them, harness.compare.replay decides on them, the worker job carries them between
processes), so they depend on nothing but numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PATHS = ("auto", "one-pass", "stepwise")


@dataclass
class Candidate:
    """What a node sends: its discrete output and result, nothing else it could make up."""

    arrays: Mapping[str, np.ndarray]  # codes (frames, codebooks) / token_ids (rows, n) / waveform / text_token_ids
    response: dict[str, Any] | None = None


@dataclass(frozen=True)
class Flip:
    """A position whose candidate token is not the one the validator samples."""

    step: int  # generation step
    row: int  # codebook (MusicGen) or returned sequence (text)
    index: int  # frame (MusicGen) or token position (text)
    candidate: int
    sampled: int
    gap: float  # logit units; inf: the candidate's token was impossible


@dataclass
class StepDetail:
    """One step as the validator computed it (kept for explaining a divergence)."""

    step: int
    candidate: np.ndarray  # (rows,)
    sampled: np.ndarray  # (rows,)
    valid: np.ndarray  # (rows,) bool
    scores: np.ndarray  # (rows, V) float64 processed scores before filtering (U)
    kept: np.ndarray  # (rows, V) bool: survives the filters
    log_draws: np.ndarray | None  # (rows, V) float64 log E; None for greedy


@dataclass
class StageTrace:
    stage: str  # "audio" or "text"
    path: str
    steps: int = 0
    positions: int = 0
    flips: list[Flip] = field(default_factory=list)
    problem: str | None = None  # structural: shape, length, token range, result not built from the tokens
    decoded: np.ndarray | None = None  # audio: the validator's decoding of the candidate's codes
    closest: float | None = None  # smallest slack of a matched position: how near an honest flip came
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[int, StepDetail] = field(default_factory=dict)
    greedy: bool = False

    @property
    def max_gap(self) -> float:
        return max((f.gap for f in self.flips), default=0.0)

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "path": self.path,
            "steps": self.steps,
            "positions": self.positions,
            "flips": len(self.flips),
            "max_gap": _finite_or_none(self.max_gap) if self.flips else 0.0,
            "first_flip": _flip_dict(self.flips[0]) if self.flips else None,
            "worst_flip": _flip_dict(max(self.flips, key=lambda f: f.gap)) if self.flips else None,
            "problem": self.problem,
            "closest": self.closest,
            "seconds": {k: round(v, 6) for k, v in self.seconds.items()},
        }


@dataclass
class ReplayTrace:
    kind: str
    start: str
    stages: list[StageTrace]

    @property
    def max_gap(self) -> float:
        return max((s.max_gap for s in self.stages), default=0.0)

    @property
    def problem(self) -> str | None:
        return next((f"{s.stage}: {s.problem}" for s in self.stages if s.problem), None)

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "stages": [s.summary() for s in self.stages]}


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _flip_dict(f: Flip) -> dict[str, Any]:
    return {
        "step": f.step,
        "row": f.row,
        "index": f.index,
        "candidate": f.candidate,
        "sampled": f.sampled,
        "gap": _finite_or_none(f.gap),
    }


@dataclass
class Options:
    start: str = "warm"
    path: str = "auto"
    rows_in_draw_factor: int = 1  # the batch size the candidate ran in (its rows come first)
    detail_steps: tuple[int, ...] = ()
    #: auto: when a one-pass flip's gap falls in this band (around the margin, where the one
    #: pass's own float noise could decide), the stage is re-checked with forced generation
    recheck_band: tuple[float, float] | None = None
    allow_greedy: bool = False  # explain_divergence only: greedy steps, gaps without draws
