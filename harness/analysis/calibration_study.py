"""What a calibration study found: each configuration's entry and the held-out evidence behind
it (what harness.workflows.calibrate computes and harness.report.calibration renders), and the
pieces both rules share: a task's reference execution, the sources of its cheats, the scope of
the executions paired and the table of honest sources.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.analysis.calibration import ConfigKey, Execution, HonestPair
from harness.compare.cheats import CheatSources
from harness.compare.levels import Comparable
from harness.spec.calibration import SCOPE_LIBRARIES, Calibration, Entry, Scope
from harness.vocabulary import CALIBRATION_SOURCES


@dataclass
class Judged:
    """One held-out candidate (an honest pair or a cheat) and what the rule decided."""

    what: str  # the honest source, or the cheat's name
    accepted: bool
    score: float | None  # accepted iff <= 1 (None: never, e.g. other codes)
    codes_differ: bool = False
    reason: str = ""


@dataclass
class ConfigStudy:
    """One configuration's calibration: its entry and the held-out evidence behind it."""

    config: ConfigKey
    entry: Entry
    pairs: dict[str, dict[str, int]]  # source -> pairs, codes differ, held out, rejected held out
    honest: list[Judged] = field(default_factory=list)
    cheats: list[Judged] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # rule-specific figures (replay: margin, gaps)

    @property
    def by_cheat(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"candidates": 0, "accepted": 0})
        for c in self.cheats:
            out[c.what]["candidates"] += 1
            out[c.what]["accepted"] += c.accepted
        return dict(out)


@dataclass
class CalibrationStudy:
    rule: str
    calibration: Calibration
    configs: list[ConfigStudy]
    inputs: list[str]
    notes: list[str]
    seconds: float
    executions: int


def reference(group: list[Execution]) -> Execution:
    """A task's reference execution: the first run's, native kernels, fewest threads, first worker."""

    def order(e: Execution) -> tuple[int, bool, int, int, int]:
        ax = e.record.axes
        return (e.source, ax.isa != "native", ax.threads or 0, ax.worker, ax.repeat)

    return min(group, key=order)


def cheat_sources(
    config: ConfigKey,
    task: str,
    by_task: dict[tuple[ConfigKey, str], list[Execution]],
    honest: Comparable,
    spread: float,
) -> tuple[Execution, CheatSources]:
    """The reference of ``task`` and what its cheats are made from: another seed's and another
    prompt's output (same configuration), the same task under the model's configurations of a
    lower precision (fewer bits per weight: a more precise run than asked costs more, no cheat)."""
    group = by_task[(config, task)]
    ref = reference(group)
    others = [(k, g) for k, g in by_task.items() if k[0] == config and k[1] != task]
    other_seed = next((reference(g) for _, g in others if g[0].prompt == ref.prompt and g[0].seed != ref.seed), None)
    other_prompt = next((reference(g) for _, g in others if g[0].prompt != ref.prompt and g[0].seed == ref.seed), None)
    other_prompt = other_prompt or next((reference(g) for _, g in others if g[0].prompt != ref.prompt), None)
    lower = {
        k[0].precision: reference(g).output
        for k, g in by_task.items()
        if k[1] == task and k[0].bits < config.bits and (k[0].kind, k[0].model) == (config.kind, config.model)
    }
    return ref, CheatSources(
        honest=honest,
        other_seed=other_seed.output if other_seed else None,
        other_prompt=other_prompt.output if other_prompt else None,
        lower=lower,
        spread=max(spread, 1e-9),
        noise_seed=int(task[:8], 16) % (2**31),
        claimed_dtype=config.dtype,
    )


def scope_of(config: ConfigKey, pairs: list[HonestPair], sources: list[str]) -> Scope:
    from harness import __version__

    runs = {e.label: e for p in pairs for e in (p.a, p.b)}.values()
    libraries: dict[str, set[str]] = defaultdict(set)
    for e in runs:
        for name, version in e.libraries:
            libraries[name].add(version)
    tokens = [e.new_tokens for e in runs if e.new_tokens is not None]
    return Scope(
        kind=config.kind,
        model=config.model,
        weights_sha256=next((e.weights for e in runs if e.weights), None),
        dtype=config.dtype,
        quantize_bits=config.quantize_bits,
        new_tokens=(min(tokens), max(tokens)) if tokens else (0, 0),
        sources=[s for s in CALIBRATION_SOURCES if s in sources],
        kernel_classes=sorted({e.kernel_class for e in runs if e.kernel_class}),
        harness_version=__version__,
        gpus=sorted({g for e in runs for g in e.gpus}),
        libraries={n: sorted(libraries[n]) for n in SCOPE_LIBRARIES if libraries.get(n)},
    )


def source_table(pairs: list[HonestPair], held: frozenset[str]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for p in pairs:
        row = table.setdefault(p.source, {"pairs": 0, "codes_differ": 0, "held_out": 0, "rejected": 0})
        row["pairs"] += 1
        row["codes_differ"] += not p.codes_equal
        row["held_out"] += p.task in held
    return table
