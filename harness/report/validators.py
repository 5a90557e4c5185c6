"""Render the audio validator study (harness.analysis.studies.StudyResult) as Markdown
(``harness validators``): one place for Markdown (report/)."""

from __future__ import annotations

from harness.analysis.studies import StudyResult
from harness.compare.validators import VALIDATORS
from harness.report.run import md_table


def render_markdown(result: StudyResult) -> str:
    s = result.settings
    t = result.table
    cal = result.calibration
    lines = [
        "# Audio validator study (tiny MusicGen)",
        "",
        f"{len(s.prompts)} prompts x {s.seeds} seeds, {s.max_new_tokens} new tokens, float32 on the CPU; "
        f"{result.generations} generations in {result.seconds:.1f} s. Calibrated on the tasks with an even seed "
        f"index, judged on the others (held out): {int(t['honest_pairs'].iloc[0])} honest pairs, "
        f"{int(t['cheat_pairs'].iloc[0])} cheat pairs.",
        "",
        f"Composite calibration: largest honest max-abs {cal['honest_max_abs']:.3e}, rel-L2 "
        f"{cal['honest_max_rel_l2']:.3e} (equal codes), times margin {cal['margin']:g} -> bounds max-abs "
        f"{result.thresholds.waveform_max_abs:.3e}, rel-L2 {result.thresholds.waveform_rel_l2:.3e}.",
        "",
    ]
    rows = [
        [
            r.validator,
            f"{r.false_reject_rate:.3f}",
            f"{r.false_rejects}/{r.honest_pairs}",
            f"{r.false_accept_rate:.3f}",
            f"{r.false_accepts}/{r.cheat_pairs}",
        ]
        for r in t.itertuples(index=False)
    ]
    lines += md_table(
        (["validator", "false reject rate", "rejected honest", "false accept rate", "accepted cheats"], rows)
    )
    lines += [f"**{result.recommendation}**", ""]
    if result.det:
        lines += ["## DET operating points (held out)", ""]
        lines += md_table(
            (
                ["rule", "FRR at its threshold", "FAR at its threshold", "lowest FAR with FRR <= 1%"],
                [
                    [rule, f"{c['operating'][0]:.3f}", f"{c['operating'][1]:.3f}", _best_far(c)]
                    for rule, c in result.det.items()
                ],
            )
        )
    for title, frame, key in (
        ("Honest pairs: reject rate by condition", result.honest_by_kind, "condition"),
        ("Cheats: accept rate by cheat", result.cheats_by_kind, "cheat"),
    ):
        lines += [f"## {title}", ""]
        head = [key, "pairs", *VALIDATORS]
        body = [[str(r[key]), str(r["pairs"]), *(f"{r[v]:.2f}" for v in VALIDATORS)] for _, r in frame.iterrows()]
        lines += md_table((head, body))
    lines += [
        "## Matrix snippet (composite rule, these held-out rates)",
        "",
        "```toml",
        matrix_snippet(result).rstrip(),
        "```",
        "",
    ]
    lines += [f"- {n}" for n in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def _best_far(curve: dict[str, list[float]]) -> str:
    ok = [far for frr, far in zip(curve["frr"], curve["far"], strict=False) if frr <= 0.01]
    return f"{min(ok):.3f}" if ok else "none"


def matrix_snippet(result: StudyResult, rule: str = "composite") -> str:
    """The TOML a matrix needs to pass MusicGen configurations through ``rule`` (thresholds
    and the held-out rates, so the analysis can check FAR <= 1%)."""
    row = result.table.set_index("validator").loc[rule]
    thr = result.thresholds
    return "\n".join(
        [
            "[thresholds]",
            f"waveform_max_abs = {thr.waveform_max_abs:.3e}",
            f"waveform_rel_l2 = {thr.waveform_rel_l2:.3e}",
            "",
            "[validators.audio]",
            f'rule = "{rule}"',
            f"false_accept = {row.false_accept_rate:.4f}",
            f"false_reject = {row.false_reject_rate:.4f}",
            f"pairs = {int(row.honest_pairs + row.cheat_pairs)}",
            f'source = "harness validators: {result.settings.seeds} seeds x {len(result.settings.prompts)} prompts, '
            f'{result.settings.max_new_tokens} tokens, held-out half"',
            "",
        ]
    )
