"""The replay study as Markdown (harness.workflows.replay_study decides; this only renders)."""

from __future__ import annotations

from harness.analysis.studies import ReplayStudyResult


def _rate(r) -> str:
    return f"{r.rate:.3f} ({r.errors}/{r.pairs}; 95% CI {r.low:.3f}-{r.high:.3f})"


def render_markdown(result: ReplayStudyResult, plot_name: str = "replay-det.png") -> str:
    s = result.settings
    out = [
        "# Replay study: verifying outputs that must differ",
        "",
        f"{s.seeds} seeds x {len(s.prompts)} prompts, {s.max_new_tokens} tokens, tiny MusicGen; kernel levels native"
        + "".join(f", {lv}" for lv in result.levels)
        + f" ({', '.join(result.kernel_classes)}); "
        f"{result.generations} generations, {result.replays} replays in {result.seconds:.0f} s. Calibrated on the "
        f"even seeds, every rate below held out (odd seeds). The validator is one process at native kernels, "
        f"one thread.",
        "",
        f"**{result.summary}.**",
        "",
    ]
    out += [
        "| dtype | margin (logit) | decoder bounds (max abs / rel-L2) | FRR held out | FRR where codes differ | "
        "FAR held out |",
        "|---|---|---|---|---|---|",
    ]
    for c in result.configs:
        out.append(
            f"| {c.dtype} | {c.margin:.3g} | {c.waveform_max_abs:.3g} / {c.waveform_rel_l2:.3g} | {_rate(c.frr)} | "
            f"{_rate(c.frr_codes_differ)} | {_rate(c.far)} |"
        )
    out += [
        "",
        "Calibration: margin = 2 x max(largest honest flip gap, 2 x the validator's own one-pass noise); "
        "decoder bounds = 2 x the largest honest distance between a candidate's waveform and the decoding of its "
        "codes.",
        "",
    ]
    out += ["| dtype | largest honest flip gap | one-pass noise |", "|---|---|---|"]
    out += [f"| {c.dtype} | {c.honest_max_gap:.3g} | {c.one_pass_noise:.3g} |" for c in result.configs]
    for c in result.configs:
        out += [
            "",
            f"## {c.dtype}",
            "",
            "| honest source | candidates | codes differ | rejected | near-tie flips accepted | largest accepted gap |",
            "|---|---|---|---|---|---|",
        ]
        for src, r in c.by_source.items():
            out.append(
                f"| {src} | {r['candidates']} | {r['codes_differ']} | {r['rejected']} | {r['flips']} | "
                f"{r['largest_gap']:.3g} |"
            )
        out += ["", "| cheat | candidates | accepted | a rejection, as the rule says it |", "|---|---|---|---|"]
        for what, r in c.by_cheat.items():
            mark = "" if r.get("counted", True) else " (not counted: a costlier run than asked)"
            out.append(f"| {what}{mark} | {r['candidates']} | {r['accepted']} | {r['example']} |")
        if c.rejected_honest:
            out += ["", "Honest candidates rejected:", *[f"- {x}" for x in c.rejected_honest]]
        if c.accepted_cheats:
            out += ["", "Cheats accepted:", *[f"- {x}" for x in c.accepted_cheats]]
        if c.fleet:
            n = c.fleet["tasks"]
            out += [
                "",
                f"Mixed fleet, half native, half AVX2 ({n['count']} held-out tasks, codes differ between the "
                f"two kernel sets in {n['codes_differ']}):",
                "",
                "| rule | P(accepted) | P(aborted) | honest executions invalidated | P(3 of 3) |",
                "|---|---|---|---|---|",
            ]
            for rule in ("result_hash", "composite", "replay"):
                f = c.fleet[rule]
                out.append(
                    f"| {rule} | {f['p_accepted']:.3f} | {f['p_aborted']:.3f} | {f['invalidated']:.3f} | "
                    f"{f['p3of3']:.3f} |"
                )
    out += ["", f"DET curves: `{plot_name}` (one threshold scale over the margin and the decoder bounds together).", ""]
    out += [f"Note: {n}" for n in result.notes]
    return "\n".join(out) + "\n"
