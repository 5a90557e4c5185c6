"""The calibration study report (harness calibrate --report DIR): Markdown, JSON and a DET plot.

Renders what harness.workflows.calibrate measured; decides nothing. The DET curve sweeps one
scale over the rule's bounds (composite: max-abs and rel-L2; replay: margin and decoder bounds
together): a candidate is accepted at scale t iff its score is <= t, the operating point is t = 1.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from harness.analysis.calibration_study import CalibrationStudy, ConfigStudy

FLOOR = 1e-3  # a rate of 0 is drawn here on the log axes


def det_curve(honest: list[float | None], cheats: list[float | None]) -> dict[str, list[float]]:
    """FRR and FAR at every distinct score (None: never accepted), and the operating point."""
    hs = np.array([np.inf if x is None else x for x in honest], dtype=float)
    cs = np.array([np.inf if x is None else x for x in cheats], dtype=float)
    both = np.concatenate([hs, cs])
    points = np.unique(np.concatenate([[0.0, 1.0], both[np.isfinite(both)]]))

    def rate(mask: np.ndarray) -> float:
        return float(np.mean(mask)) if mask.size else 0.0

    return {
        "threshold": points.tolist(),
        "frr": [rate(hs > t) for t in points],
        "far": [rate(cs <= t) for t in points],
        "operating": [rate(hs > 1.0), rate(cs <= 1.0)],
    }


def _rate(r: Any) -> str:
    return f"{r.errors}/{r.pairs} ({r.rate:.3f}; 95% CI {r.low:.3f}-{r.high:.3f})"


def render_markdown(study: CalibrationStudy, plot: str | None = "det.png") -> str:
    cal = study.calibration
    lines = [
        f"# Calibration of the {study.rule} rule",
        "",
        f"{cal.made_by}; {study.seconds:.0f} s. Calibration file digest `{cal.digest[:16]}`.",
        "",
        "Held out by task: a task (prompt and seed) is in the calibration half or the held-out half, never both.",
        "Honest pairs are every two executions of one task and configuration that one source separates;",
        "pairs share executions, so they are not independent draws: read the intervals as optimistic.",
        "",
        "| configuration | sources in scope | bounds max abs / rel-L2 | held-out FRR | held-out FAR | left out |",
        "|---|---|---|---|---|---|",
    ]
    for c in study.configs:
        e = c.entry
        margin = f"; margin {e.replay_margin:.3g}" if e.replay_margin is not None else ""
        lines.append(
            f"| {c.config.name} | {', '.join(e.scope.sources) or '-'} | {e.waveform_max_abs:.3g} / "
            f"{e.waveform_rel_l2:.3g}{margin} | {_rate(e.false_reject)} | {_rate(e.false_accept)} | "
            f"{'; '.join(e.notes) or '-'} |"
        )
    for c in study.configs:
        lines += [
            "",
            f"## {c.config.name}",
            "",
            "| honest source | pairs | codes differ | held out | rejected held out |",
        ]
        lines.append("|---|---|---|---|---|")
        for source, row in c.pairs.items():
            lines.append(
                f"| {source} | {row['pairs']} | {row['codes_differ']} | {row['held_out']} | {row['rejected']} |"
            )
        lines += ["", "| cheat (held out) | candidates | accepted |", "|---|---|---|"]
        for what, row in c.by_cheat.items():
            lines.append(f"| {what} | {row['candidates']} | {row['accepted']} |")
        scope = c.entry.scope
        libraries = ", ".join(f"{k} {'/'.join(v)}" for k, v in (scope.libraries or {}).items()) or "-"
        lines += [
            "",
            f"Scope: kernel classes {', '.join(scope.kernel_classes) or '-'}; "
            f"GPUs {', '.join(scope.gpus or []) or 'none'}; "
            f"libraries {libraries}; new tokens {scope.new_tokens[0]}-{scope.new_tokens[1]}.",
        ]
    if study.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in study.notes]
    if plot:
        lines += ["", f"![DET curves]({plot})"]
    return "\n".join(lines) + "\n"


def to_json(study: CalibrationStudy) -> dict[str, Any]:
    return {
        "rule": study.rule,
        "inputs": study.inputs,
        "executions": study.executions,
        "seconds": round(study.seconds, 1),
        "notes": study.notes,
        "calibration_digest": study.calibration.digest,
        "configs": [
            {
                "config": asdict(c.config),
                "entry": c.entry.model_dump(mode="json"),
                "pairs": c.pairs,
                "cheats": c.by_cheat,
                "details": c.details,
                "det": det_curve([h.score for h in c.honest], [x.score for x in c.cheats]),
            }
            for c in study.configs
        ],
    }


def plot_det(configs: list[ConfigStudy], title: str) -> bytes:
    """FRR against FAR per configuration on log axes (0 drawn at 1e-3), operating points as dots."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=110)
    ax = fig.subplots()
    for c in configs:
        curve = det_curve([h.score for h in c.honest], [x.score for x in c.cheats])
        (line,) = ax.step(
            np.maximum(curve["far"], FLOOR), np.maximum(curve["frr"], FLOOR), where="post", label=c.config.name
        )
        op = curve["operating"]
        ax.plot(max(op[1], FLOOR), max(op[0], FLOOR), "o", color=line.get_color(), markersize=8)
    ax.axvline(0.01, color="grey", lw=0.8, ls="--")
    ax.axhline(0.01, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(FLOOR * 0.8, 1.1)
    ax.set_ylim(FLOOR * 0.8, 1.1)
    ax.set_xlabel("false accept rate (held-out cheats)")
    ax.set_ylabel("false reject rate (held-out honest pairs)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write_report(study: CalibrationStudy, out: Path) -> list[Path]:
    from harness.store.run import atomic_write_bytes, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "calibration.md", out / "calibration.json", out / "det.png"
    title = f"{study.rule} rule, held out: DET (dots: operating points; 0 drawn at 1e-3)"
    atomic_write_bytes(png, plot_det(study.configs, title))
    atomic_write_json(js, to_json(study))
    atomic_write_bytes(md, render_markdown(study, png.name).encode())
    return [md, js, png]
