"""Render the audio validator study (harness.workflows.validator_study.StudyResult) as
Markdown (``harness validators``): one place for Markdown (report/); the result is passed in,
never imported at run time (the workflows stage sits above the report stage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.compare.validators import VALIDATORS
from harness.report.run import md_table

if TYPE_CHECKING:
    from harness.workflows.validator_study import StudyResult


def render_markdown(result: StudyResult) -> str:
    s = result.settings
    t = result.table
    lines = ["# Audio validator study (tiny MusicGen)", "",
             f"{len(s.prompts)} prompts x {s.seeds} seeds, {s.max_new_tokens} new tokens, float32 on the CPU; "
             f"{result.generations} generations in {result.seconds:.1f} s; "
             f"{int(t['honest_pairs'].iloc[0])} honest pairs, {int(t['cheat_pairs'].iloc[0])} cheat pairs.", ""]
    rows = [[r.validator, f"{r.false_reject_rate:.3f}", f"{r.false_rejects}/{r.honest_pairs}",
             f"{r.false_accept_rate:.3f}", f"{r.false_accepts}/{r.cheat_pairs}"] for r in t.itertuples(index=False)]
    lines += md_table((["validator", "false reject rate", "rejected honest", "false accept rate", "accepted cheats"], rows))
    lines += [f"**{result.recommendation}**", ""]
    for title, frame, key, what in (("Honest pairs: reject rate by condition", result.honest_by_kind, "condition", "rejected"),
                                    ("Cheats: accept rate by cheat", result.cheats_by_kind, "cheat", "accepted")):
        lines += [f"## {title}", ""]
        head = [key, "pairs", *VALIDATORS]
        body = [[str(r[key]), str(r["pairs"]), *(f"{r[v]:.2f}" for v in VALIDATORS)] for _, r in frame.iterrows()]
        lines += md_table((head, body))
    lines += [f"- {n}" for n in result.notes]
    return "\n".join(lines).rstrip() + "\n"
