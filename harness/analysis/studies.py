"""The validator and replay studies' settings and results: what the study workflows compute,
the renderers write down and the calibration files are made from.

Why below the workflows: the renderers (report/validators.py, report/replay_study.py) could
name these types only under ``TYPE_CHECKING``, an import against the flow that the layout
test did not see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from harness.compare.levels import Thresholds
from harness.spec.calibration import Calibration, Rate

PROMPTS = ("80s pop track with bassy drums and synth", "calm acoustic guitar with a soft piano melody")


@dataclass(frozen=True)
class StudySettings:
    seeds: int = 20
    prompts: tuple[str, ...] = PROMPTS
    max_new_tokens: int = 32
    processes: bool = True  # honest pairs across a second worker process
    model: str = "tiny:musicgen"


@dataclass
class StudyResult:
    settings: StudySettings
    table: pd.DataFrame  # per validator: rates and counts
    honest_by_kind: pd.DataFrame  # reject rate per honest condition x validator
    cheats_by_kind: pd.DataFrame  # accept rate per cheat x validator
    recommendation: str
    seconds: float
    generations: int
    thresholds: Thresholds = field(default_factory=Thresholds)  # with the calibrated composite bounds
    calibration: dict[str, float] = field(default_factory=dict)
    det: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReplayStudySettings:
    seeds: int = 8
    prompts: tuple[str, ...] = PROMPTS
    max_new_tokens: int = 32
    configs: tuple[tuple[str, int | None], ...] = (("float32", None), ("bfloat16", None))
    levels: tuple[str, ...] = ("avx2", "scalar")  # other CPU kernel levels (honest isa sources)
    model: str = "tiny:musicgen"


@dataclass
class ConfigStudy:
    dtype: str
    quantize_bits: int | None
    margin: float
    waveform_max_abs: float
    waveform_rel_l2: float
    honest_max_gap: float  # calibration half
    one_pass_noise: float  # calibration half
    frr: Rate
    frr_codes_differ: Rate
    far: Rate
    by_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_cheat: dict[str, dict[str, Any]] = field(default_factory=dict)
    det: dict[str, list[float]] = field(default_factory=dict)
    #: each held-out candidate's score (accepted iff <= 1; None: infinite), for the separation plot
    honest_scores: list[float | None] = field(default_factory=list)
    cheat_scores: list[float | None] = field(default_factory=list)
    fleet: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected_honest: list[str] = field(default_factory=list)  # why, for each held-out honest rejection
    accepted_cheats: list[str] = field(default_factory=list)
    composite_bounds: tuple[float, float] = (0.0, 0.0)


@dataclass
class ReplayStudyResult:
    settings: ReplayStudySettings
    configs: list[ConfigStudy]
    calibration: Calibration
    seconds: float
    generations: int
    replays: int
    kernel_classes: list[str]
    levels: list[str]
    summary: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "seconds": round(self.seconds, 1),
            "generations": self.generations,
            "replays": self.replays,
            "kernel_classes": self.kernel_classes,
            "levels": self.levels,
            "summary": self.summary,
            "notes": self.notes,
            "configs": [
                {
                    **{k: v for k, v in asdict(c).items() if k not in ("frr", "frr_codes_differ", "far")},
                    "frr": c.frr.model_dump(),
                    "frr_codes_differ": c.frr_codes_differ.model_dump(),
                    "far": c.far.model_dump(),
                }
                for c in self.configs
            ],
            "calibration_digest": self.calibration.digest,
        }
