"""Report rendering: Markdown golden file, JSON round trip, self-contained HTML, file writing.

Regenerate the golden file after an intended change with ``UPDATE_GOLDEN=1 pytest tests/report/test_report.py``
and read the diff before committing it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.model import (
    Analysis,
    ConfigResult,
    CostSummary,
    DimensionSummary,
    GateResult,
    ModelRow,
    NetworkFigures,
    PairResult,
)
from harness.report.html import render_html
from harness.report.run import render_json, render_markdown
from harness.report.write import write_reports
from harness.store.run import RunStore

GOLDEN = Path(__file__).parent.parent / "data" / "report_golden.md"
TABLE_CLASSES = ("heatmap", "verdicts", "agreement", "evidence", "quantization", "costs", "models", "gates", "warnings")
SECTION_IDS = (
    "summary",
    "map",
    "verdicts",
    "agreement",
    "configs",
    "findings",
    "costs",
    "gates",
    "warnings",
    "environment",
)
RUN_WIDE_PLOTS = 6  # agreement, latency, memory, real-time factor, tokens/s, first-divergence histogram

AUDIO = "musicgen-short/float32/qnone/cpu/pdefault"
TEXT = "gpt2-greedy/bfloat16/qnone/cpu/pdefault"
SKIPPED = "gpt2-greedy/float16/q4/cuda/pdefault"


def _agreement(p3: list[float | None], p2: list[float | None], triples: int) -> dict:
    rules = ("bitwise", "tokens", "tolerance", "perceptual")
    return {
        r: {
            "p3of3": a,
            "p2of3": b,
            "p_aborted": None if b is None else round(1 - b, 6),
            "invalidated": None if a is None or b is None else round((b - a) / 3, 6),
            "triples": triples,
        }
        for r, a, b in zip(rules, p3, p2, strict=False)
    }


def make_analysis() -> Analysis:
    pair = PairResult(
        dimension="process",
        config_id=AUDIO,
        a="c0-w0-r0",
        b="c0-w1-r0",
        level="divergent",
        metrics={"cosine": 0.8123456, "rel_l2": 0.61, "snr_db": 3.25, "hamming": 17},
        first_divergence=12,
        steps_total=50,
        a_artifact="artifacts/a.npz",
        b_artifact="artifacts/b.npz",
    )
    audio = ConfigResult(
        config_id=AUDIO,
        task="musicgen-short",
        kind="text-to-audio",
        model="tiny-musicgen",
        dtype="float32",
        quantize_bits=None,
        device="cpu",
        profile="default",
        verdict="not_ready",
        reason="diverges: process 1 of 2 | batch 1 of 7",
        counts={"ok": 6},
        dimensions={
            "process": DimensionSummary(
                pairs=2, levels={"divergent": 1, "bitwise": 1}, worst="divergent", first_divergence=[12]
            ),
            "repeat": DimensionSummary(
                pairs=4, levels={"bitwise": 3, "tokens": 1}, worst="tokens", findings={"waveform_far_tokens_equal": 1}
            ),
            "batch": DimensionSummary(
                pairs=7,
                levels={"tolerance": 6, "divergent": 1},
                worst="divergent",
                first_divergence=[40, 3, 9, 17, 22, 31],
            ),
        },
        agreement=_agreement([0.5, 0.5, 0.75, 1.0], [1.0, 1.0, 1.0, 1.0], 4),
        seed_sensitive=True,
        network=NetworkFigures(
            rule="tokens",
            label="proposed: test rule",
            p_accepted=1.0,
            p_aborted=0.0,
            invalidated=0.1666667,
            p3of3=0.5,
            triples=4,
        ),
        validator={"rule": "composite", "false_accept": 0.0, "false_reject": 0.0, "pairs": 100, "source": "test"},
        seed_note="seeds 0 and 1 give different outputs",
        lint=["TF32 matmul is enabled | may differ", "threads=4"],
        cost=CostSummary(
            executions=6,
            latency_s={"n": 6, "median": 0.4215, "p90": 0.5129},
            load_s=1.25,
            peak_memory_bytes=123 * 2**20 + 2**19,
            memory_kind="rss_peak",
            real_time_factor=2.5,
            latency_samples=[0.41, 0.42, 0.43, 0.40, 0.52, 0.45],
        ),
    )
    text = ConfigResult(
        config_id=TEXT,
        task="gpt2-greedy",
        kind="text-generation",
        model="tiny-gpt2",
        dtype="bfloat16",
        quantize_bits=None,
        device="cpu",
        profile="default",
        verdict="ready",
        reason="bitwise in 3 dimensions",
        counts={"ok": 4},
        dimensions={
            "repeat": DimensionSummary(pairs=2, levels={"bitwise": 2}, worst="bitwise"),
            "process": DimensionSummary(pairs=1, levels={"bitwise": 1}, worst="bitwise"),
            "seed": DimensionSummary(pairs=1, levels={"divergent": 1}, worst="divergent", first_divergence=[0]),
        },
        agreement=_agreement([1.0] * 4, [1.0] * 4, 1),
        seed_sensitive=True,
        lint=["threads=4"],
        network=NetworkFigures(
            rule="result_hash",
            label="network: sha256 of the result JSON file",
            p_accepted=1.0,
            p_aborted=0.0,
            invalidated=0.0,
            p3of3=1.0,
            triples=1,
        ),
        dtype_drift=DimensionSummary(pairs=1, levels={"tokens": 1}, worst="tokens", first_divergence=[5]),
        cost=CostSummary(
            executions=4,
            latency_s={"n": 4, "median": 0.0123, "p90": 0.02},
            load_s=0.5,
            peak_memory_bytes=50 * 2**20,
            memory_kind="rss_peak",
            tokens_per_second=812.3456,
            time_to_first_token_s=0.004,
            latency_samples=[0.011, 0.012, 0.013, 0.02],
        ),
    )
    skipped = ConfigResult(
        config_id=SKIPPED,
        task="gpt2-greedy",
        kind="text-generation",
        model="tiny-gpt2",
        dtype="float16",
        quantize_bits=4,
        device="cuda",
        profile="default",
        verdict="skipped",
        reason="CUDA is not available",
        counts={"skipped": 2},
        quantization={"method": "bitsandbytes", "bits": 4},
    )
    return Analysis(
        run_id="20250101-000000-golden",
        run_dir="runs/20250101-000000-golden",
        matrix="golden-matrix",
        description="Synthetic analysis for the report golden test.",
        harness_version="0.1.0",
        environment={
            "processor": "Test CPU @ 3.00GHz",
            "cpu_count": 8,
            "machine": "x86_64",
            "python": "3.11.9",
            "os": "Linux-test",
            "torch": "2.5.1+cpu",
            "cuda_available": False,
            "cuda_runtime": None,
            "gpu_names": [],
            "torch_threads": 4,
            "blas": "open",
            "libraries": {"torch": "2.5.1+cpu", "transformers": "5.0.0", "bitsandbytes": None, "numpy": "2.1.0"},
        },
        tiny_models={"tiny-musicgen": "sha256:aaaa1111", "tiny-gpt2": "sha256:bbbb2222"},
        thresholds={"rel_l2_max": 0.1, "cosine_min": 0.99, "hamming_max": 8},
        gate_rules=["not_ready", "failed"],
        records=12,
        problems=["results.jsonl:13: torn last line (a crash mid-write?) skipped (JSONDecodeError)"],
        configs=[audio, text, skipped],
        examples=[pair],
        gates=[
            GateResult(config_id=AUDIO, passed=False, reason="not_ready: diverges: process 1 of 2 | batch 1 of 7"),
            GateResult(config_id=TEXT, passed=True, reason="ready: bitwise in 3 dimensions"),
            GateResult(config_id=SKIPPED, passed=True, reason="skipped: CUDA is not available"),
        ],
        models=[
            ModelRow(
                model="tiny-gpt2",
                kind="text-generation",
                configs=2,
                verdicts={"ready": 1, "skipped": 1},
                best_verdict="ready",
                median_latency_s=0.0123,
                peak_memory_bytes=50 * 2**20,
            ),
            ModelRow(
                model="tiny-musicgen",
                kind="text-to-audio",
                configs=1,
                verdicts={"not_ready": 1},
                best_verdict="not_ready",
                median_latency_s=0.4215,
                peak_memory_bytes=None,
            ),
        ],
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path)


def make_run_dir(tmp_path: Path) -> Path:
    """A run directory holding the artifacts the synthetic analysis' pairs name."""
    store = RunStore.create(tmp_path / "run", {"run_id": "20250101-000000-golden"})
    t = np.linspace(0, 1, 800, dtype=np.float32)
    wav = np.sin(2 * np.pi * 5 * t)[:, None]
    store.write_artifact("a", {"waveform": wav})
    store.write_artifact("b", {"waveform": wav + np.where(t > 0.5, 0.05, 0.0).astype(np.float32)[:, None]})
    store.write_artifact("ta", {"token_ids": np.array([[5, 6, 7, 8, 9, -1]])})
    store.write_artifact("tb", {"token_ids": np.array([[5, 6, 7, 1, 2, 3]])})
    store.unlock()
    return store.path


def test_markdown_matches_golden() -> None:
    text = render_markdown(make_analysis())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), f"{GOLDEN} missing; create it with UPDATE_GOLDEN=1"
    assert text == GOLDEN.read_text(), "markdown report changed; rerun with UPDATE_GOLDEN=1 and review the diff"


def test_markdown_is_deterministic_and_survives_json_round_trip() -> None:
    a = make_analysis()
    again = Analysis.model_validate_json(render_json(a))
    assert render_markdown(again) == render_markdown(a)


def test_markdown_shows_the_fields() -> None:
    md = render_markdown(make_analysis())
    assert "| diverges: process 1 of 2 \\| batch 1 of 7 |" in md  # a pipe inside a cell is escaped
    assert "- TF32 matmul is enabled | may differ (" in md  # outside tables it stays as is
    assert md.count("threads=4") == 1  # lint deduplicated across configs
    # agreement: one row per pair rule, with the network's figures (accepted, aborted, invalidated)
    assert f"| {AUDIO} | tolerance | 0.750 | 1.000 | 0.000 | 0.083 | 4 |" in md
    assert "Agreement under the network's rule" in md and "proposed: test rule" in md
    assert "123.5" in md and "rss_peak" in md
    assert "| bits | 4 |" in md and '{"' not in md  # quantization as a table, never raw JSON
    assert md.index("Keep 1 configuration(s) off the network") < md.index("|")  # the answer before any table
    assert "runs/20250101-000000-golden" in md and "/tmp" not in md


def test_json_round_trips_with_sorted_keys() -> None:
    a = make_analysis()
    text = render_json(a)
    assert Analysis.model_validate_json(text) == a
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert doc["schema_version"] == a.schema_version


def test_json_refuses_non_finite_numbers_naming_the_field() -> None:
    a = make_analysis()
    a.examples[0].metrics["snr_db"] = float("inf")
    with pytest.raises(ValueError, match=r"examples\[0\]\.metrics\.snr_db"):
        render_json(a)


def _assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    for cls in TABLE_CLASSES:
        assert f'<table class="{cls}">' in page, cls
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in page, sid


def test_html_has_tables_sections_and_plots(run_dir: Path) -> None:
    pytest.importorskip("matplotlib")
    page = render_html(make_analysis(), run_dir)
    _assert_self_contained(page)
    # the worst pair of the audio config, inside its own section, plus the run-wide charts
    assert page.count('<img class="plot"') == 1 + RUN_WIDE_PLOTS
    assert page.count("data:image/png;base64,") == 1 + RUN_WIDE_PLOTS
    section = page[page.index(f'<details class="config" id="cfg-0" data-config="{AUDIO}"') :]
    assert f'<img class="plot" data-config="{AUDIO}" alt="Waveform overlay' in section[: section.index("</details>")]
    assert "<figcaption>" in page
    assert 'class="v-not_ready"' in page and 'class="g-FAILED"' in page
    # the heatmap: one cell per (configuration, dimension), the level written in the cell
    assert page.count('<td class="cell l-') == 3 * 5
    assert f'data-config="{AUDIO}" data-dim="batch" title="batch: 7 pair(s): tolerance 6, divergent 1">' in page
    assert page.index('id="summary"') < page.index("<table")


def test_html_token_example_and_missing_artifact(run_dir: Path) -> None:
    pytest.importorskip("matplotlib")
    a = make_analysis()
    tokens = PairResult(
        dimension="process",
        config_id=TEXT,
        a="x",
        b="y",
        level="divergent",
        first_divergence=3,
        steps_total=6,
        a_artifact="artifacts/ta.npz",
        b_artifact="artifacts/tb.npz",
    )
    missing = a.examples[0].model_copy(update={"b_artifact": "artifacts/gone.npz"})
    page = render_html(a.model_copy(update={"examples": [tokens, missing]}), run_dir)
    _assert_self_contained(page)
    assert "first divergence marked" in page
    assert "artifact could not be loaded" in page and "artifact missing" in page
    assert page.count('<img class="plot"') == 1 + RUN_WIDE_PLOTS  # tokens pair + run-wide charts


def test_html_without_run_dir_notes_instead_of_example_plots() -> None:
    page = render_html(make_analysis(), None)
    _assert_self_contained(page)
    assert "no run directory given" in page


def test_html_without_matplotlib_renders_notes(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    page = render_html(make_analysis(), run_dir)
    _assert_self_contained(page)
    assert "data:image/png" not in page
    assert page.count("matplotlib is not installed") == 1 + RUN_WIDE_PLOTS - 1  # speed charts share one note


def test_write_reports_writes_files_atomically(run_dir: Path) -> None:
    a = make_analysis()
    paths = write_reports(a, run_dir, ["md", "html", "json"])
    assert [p.name for p in paths] == ["report.md", "report.html", "report.json"]
    assert (run_dir / "report.md").read_text() == render_markdown(a)
    assert Analysis.model_validate_json((run_dir / "report.json").read_text()) == a
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".report")]  # no temporary files left


def test_write_reports_rejects_unknown_format_before_writing(run_dir: Path) -> None:
    with pytest.raises(ValueError, match="'pdf'"):
        write_reports(make_analysis(), run_dir, ["md", "pdf"])
    assert not (run_dir / "report.md").exists()
