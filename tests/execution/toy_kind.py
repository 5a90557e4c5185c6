"""A fifth task kind, added the way docs/architecture.md says: this one engine file plus one registry
line (``TOY`` below, registered through ``HARNESS_KINDS`` so the runner and its worker
processes both know it). Nothing else in the harness changes.

The toy kind "echoes": its output is the task text's bytes, shifted by a seeded offset, as
token ids. Deterministic by construction, so a matrix of it is ``ready`` everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.engines.base import LoadedModel
from harness.outputs import Output
from harness.spec.kinds import KindSpec


class ToyTask(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: str = "toy:echo"
    text: Annotated[str, Field(min_length=1, max_length=200)]
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    dtype: Literal["float16", "bfloat16", "float32", "auto"] = "auto"
    quantize_bits: Literal[4, 8] | None = None


class ToyEngine:
    kind = "toy"

    def load(self, task: ToyTask, device: str) -> LoadedModel:
        return LoadedModel(key=(task.model, device), objects={}, meta={"model": task.model})

    def run(
        self, loaded: LoadedModel, task: ToyTask, device: str, neighbours: Sequence[ToyTask] = (), seeded: bool = False
    ) -> Output:
        """``seeded`` (a cold cell) changes nothing: the offset comes from the task's own seed."""
        offset = int(np.random.default_rng(task.seed).integers(0, 1000))
        ids = (np.frombuffer(task.text.encode(), dtype=np.uint8).astype(np.int64) + offset)[None, :]
        return Output(
            kind="toy",
            arrays={"token_ids": ids},
            response={"echo": task.text, "offset": offset},
            discrete="token_ids",
            steps="token_ids",
            timings={"generate_s": 0.0},
        )


TOY = KindSpec(
    name="toy",
    task_model="tests.execution.toy_kind:ToyTask",
    engine="tests.execution.toy_kind:ToyEngine",
    discrete="token_ids",
    steps=("token_ids",),
)
