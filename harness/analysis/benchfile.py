"""A pytest-benchmark JSON file, typed: what ``harness bench`` compares is checked first.

Why: the file is input a user (or a CI artifact) hands over. Read loosely, a negative round
time printed "-350.0% faster", all-zero rounds an interval below -100%, a median ``true`` read
as 1 s and ``1e400`` as infinity, a string median failed inside the statistics as a
``TypeError`` naming nothing, and two benchmarks of one name compared whichever came last.
Every time here is a finite number of seconds in [0, MAX_SECONDS] given as a number (strict:
no strings or bools), the summary is ordered (min <= median <= max), a benchmark whose every
round took 0 s has no ratio and is refused, and names are unique. Errors are one line naming
the file, the benchmark and the field. Only the fields the comparison reads are typed; the
rest of pytest-benchmark's document is kept as it is (``extra="allow"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import StoreError

#: the longest round time read (seconds, about 116 days): beyond it a sum or ratio overflows
#: nothing, but no benchmark measures it; it is a corrupted or hostile file
MAX_SECONDS = 1e7

Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]


class BenchmarkStats(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    rounds: int = Field(ge=1)
    min: Seconds
    max: Seconds
    mean: Seconds
    median: Seconds
    stddev: Seconds | None = None
    q1: Seconds | None = None
    q3: Seconds | None = None
    iqr: Seconds | None = None
    data: list[Seconds] = Field(default_factory=list)  # per-round times (--benchmark-save-data)

    @model_validator(mode="after")
    def _ordered(self) -> BenchmarkStats:
        if not self.min <= self.median <= self.max or not self.min <= self.mean <= self.max:
            raise ValueError(
                f"min {self.min} <= median {self.median}, mean {self.mean} <= max {self.max} does not hold"
            )
        if self.max == 0 or (self.data and not any(self.data)):
            raise ValueError("every round took 0 s: a time of 0 has no ratio to compare")
        return self


class Benchmark(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str = Field(min_length=1)
    fullname: str | None = None
    stats: BenchmarkStats

    @property
    def key(self) -> str:
        return self.fullname or self.name


def read_benchmarks(doc: Any, path: Path) -> list[Benchmark]:
    """The benchmarks of a pytest-benchmark document, each checked; StoreError (one line) otherwise."""
    from harness.store.manifest import first_field_problem

    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise StoreError(f"{path}: not a pytest-benchmark file (no 'benchmarks' list)")
    out: list[Benchmark] = []
    seen: set[str] = set()
    for number, item in enumerate(doc["benchmarks"]):
        label = f"benchmark {number}"
        if isinstance(item, dict):
            name = item.get("fullname") or item.get("name")
            label = f"benchmark {name!r}" if isinstance(name, str) else label
        try:
            bench = Benchmark.model_validate(item)
        except ValidationError as err:
            raise StoreError(f"{path}: {label}: {first_field_problem(err)}") from None
        if bench.key in seen:
            raise StoreError(f"{path}: benchmark {bench.key!r} appears twice (which one to compare?)")
        seen.add(bench.key)
        out.append(bench)
    return out
