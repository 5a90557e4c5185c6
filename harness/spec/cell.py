"""A matrix cell: one task as it runs, and the settings the task does not say.

Why its own module: the cell's identity (cell id, spec hash, config id) is what stored runs
and their resumes are keyed by, so it is kept apart from how a matrix expands. The task
document is the one copy of the seed, dtype and quantization; the record's ``Axes`` are
derived from it and the other settings, never stored beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from harness.digests import digest_json
from harness.isa import NATIVE
from harness.spec.kinds import KINDS, TASK_SETTINGS
from harness.store.records import Axes
from harness.vocabulary import CURRENT_STACK


@dataclass(frozen=True)
class Cell:
    """One cell: the task as it runs, and the settings the task does not say. The task document
    is the one copy of the cell's seed, dtype and quantization (engines, receipts and digests
    read it); ``axes``, the record's, is built from both, reading the task's through its kind's
    ``KindSpec.task_settings``, so the two can never disagree."""

    task_name: str
    kind: str
    task_doc: dict[str, Any]  # the task with this cell's dtype/quant/seed applied
    settings: dict[str, Any]  # the other Axes fields (device, threads, ..., repeat, worker)
    skip_reason: str | None = None
    engine: str = "harness"  # not in the spec hash: equivalent engines must give the same output

    def __post_init__(self) -> None:
        doubled = sorted(set(self.settings) & set(TASK_SETTINGS))
        if doubled:
            raise ValueError(
                f"cell {self.task_name}: {', '.join(doubled)} belong to the task document, not the settings"
            )

    @cached_property
    def axes(self) -> Axes:
        return Axes(**KINDS.get(self.kind).task_settings(self.task_doc), **self.settings)

    @property
    def cell_id(self) -> str:
        a = self.axes
        q = f"q{a.quantize_bits}" if a.quantize_bits else "qnone"
        t = f"t{a.threads}" if a.threads else "tauto"
        # isa and tf32 appear only when not the default, so earlier runs keep their cell ids
        kernels = (f"/isa-{a.isa}" if a.isa != NATIVE else "") + ("/tf32" if a.tf32 == "on" else "")
        kernels += f"/stack-{a.stack}" if a.stack != CURRENT_STACK else ""  # likewise: earlier ids kept
        return (
            f"{self.task_name}/{a.dtype}/{q}/seed{a.seed}/{a.device.replace(':', '')}/{t}/b{a.batch_size}/"
            f"p{a.profile}/{a.load}{kernels}/w{a.worker}/r{a.repeat}"
        )

    @property
    def spec_hash(self) -> str:
        """What was asked: equal spec hashes must give equal outputs on a deterministic node.
        ``load`` enters only when cold: warm is what earlier versions ran, so warm specs keep
        their hashes."""
        a = self.axes
        doc = {
            "task": self.task_doc,
            "kind": self.kind,
            "device": a.device,
            "threads": a.threads,
            "batch_size": a.batch_size,
            "profile": a.profile,
        }
        if a.load != "warm":
            doc["load"] = a.load
        if a.isa != NATIVE:  # likewise native and tf32 off: what earlier versions ran
            doc["isa"] = a.isa
        if a.tf32 != "off":
            doc["tf32"] = a.tf32
        if a.stack != CURRENT_STACK:  # other library versions may give other outputs: compared, never pooled
            doc["stack"] = a.stack
        return digest_json(doc)[:16]

    @property
    def config_id(self) -> str:
        a = self.axes
        q = f"q{a.quantize_bits}" if a.quantize_bits else "qnone"
        tf32 = "/tf32" if a.tf32 == "on" else ""  # TF32 is a configuration, as the profile is
        return f"{self.task_name}/{a.dtype}/{q}/{a.device.replace(':', '')}/p{a.profile}{tf32}"

    @property
    def group_key(self) -> tuple[str, str, str, str, str]:
        """Cells sharing a worker: same device, determinism profile, kernel set, TF32 mode and
        software stack (each is set in the environment before torch starts)."""
        return (self.axes.device, self.axes.profile, self.axes.isa, self.axes.tf32, self.axes.stack)
