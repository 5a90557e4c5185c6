"""The harness's own hot paths: hashing outputs, comparing two outputs, loading a large
results.jsonl, analysing a run and rendering its reports. Inputs are synthetic and built
outside the timed region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import harness.compare.levels as compare_mod
from harness.analysis.run import analyze_run
from harness.compare.levels import Comparable, compare
from harness.digests import digest_array
from harness.report.html import render_html
from harness.report.run import render_json, render_markdown
from harness.store.run import RunStore
from tests.synthetic import music

pytestmark = pytest.mark.bench
RATE = 32000  # musicgen's sampling rate


@pytest.mark.benchmark(group="hashing")
@pytest.mark.parametrize("seconds", [10, 60])
def test_digest_waveform(benchmark, seconds: int) -> None:
    wave = np.random.default_rng(seconds).standard_normal((seconds * RATE, 1)).astype(np.float32)
    digest = benchmark(digest_array, wave)
    assert len(digest) == 64
    benchmark.extra_info["bytes"] = wave.nbytes


def _outputs(kind: str) -> tuple[Comparable, Comparable]:
    """Two 10 s outputs whose digests differ: ``threads`` keeps the codes and moves the last
    float bits; ``divergent`` changes the codes and the sound from frame 250 on."""
    a_wave = music(1, seconds=10.0, rate=RATE)
    codes_a = np.random.default_rng(1).integers(0, 2048, size=(500, 4), dtype=np.int64)
    if kind == "threads":
        b_wave, codes_b = (a_wave * np.float32(1 + 2e-7)).astype(np.float32), codes_a
    else:
        b_wave = a_wave.copy()
        b_wave[RATE * 5 :] = music(2, seconds=5.0, rate=RATE)
        codes_b = codes_a.copy()
        codes_b[250:] = np.random.default_rng(2).integers(0, 2048, size=(250, 4))

    def comparable(wave: np.ndarray, codes: np.ndarray) -> Comparable:
        digests = {"waveform": digest_array(wave), "codes": digest_array(codes)}
        digests.update(output=digests["waveform"], tokens=digests["codes"])
        return Comparable(
            arrays={"waveform": wave, "codes": codes},
            digests=digests,
            discrete="codes",
            steps="codes",
            sampling_rate=RATE,
        )

    return comparable(a_wave, codes_a), comparable(b_wave, codes_b)


@pytest.mark.benchmark(group="compare")
@pytest.mark.parametrize("kind, level", [("threads", "tokens"), ("divergent", "divergent")])
def test_compare_two_outputs(benchmark, kind: str, level: str) -> None:
    a, b = _outputs(kind)

    def setup():
        compare_mod._FP_CACHE.clear()  # measure the fingerprints too, not the memo
        return (a, b), {}

    result = benchmark.pedantic(compare, setup=setup, rounds=15, warmup_rounds=1)
    assert result.level == level
    if kind == "divergent":
        assert result.first_divergence == 250 and "hamming" in result.metrics


@pytest.mark.benchmark(group="store")
def test_load_records_20k(benchmark, synthetic_20k: Path) -> None:
    store = RunStore(synthetic_20k)
    loaded = benchmark.pedantic(store.load_records, rounds=3, warmup_rounds=0, iterations=1)
    assert len(loaded.records) == 20_000 and not loaded.problems


@pytest.mark.benchmark(group="analysis")
def test_analyze_run_2k(benchmark, synthetic_small: Path) -> None:
    a = benchmark.pedantic(analyze_run, args=(synthetic_small,), rounds=3, warmup_rounds=1, iterations=1)
    assert a.records == 2000 and len(a.configs) == 10


@pytest.fixture(scope="module")
def small_analysis(synthetic_small: Path):
    return analyze_run(synthetic_small)


@pytest.mark.benchmark(group="report")
def test_render_markdown(benchmark, small_analysis) -> None:
    text = benchmark(render_markdown, small_analysis)
    assert small_analysis.configs[0].config_id in text


@pytest.mark.benchmark(group="report")
def test_render_json(benchmark, small_analysis) -> None:
    assert benchmark(render_json, small_analysis).startswith("{")


@pytest.mark.benchmark(group="report")
def test_render_html_with_plots(benchmark, small_analysis, synthetic_small: Path) -> None:
    pytest.importorskip("matplotlib")
    page = benchmark.pedantic(
        render_html, args=(small_analysis, synthetic_small), rounds=3, warmup_rounds=1, iterations=1
    )
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page


def _smoke_doc(isa: list[str] | None) -> dict:
    import tomllib

    root = Path(__file__).resolve().parents[2] / "matrices"
    doc = tomllib.loads((root / "smoke.toml").read_text())
    doc["tasks"] = [{**t, "file": str(root / t["file"])} for t in doc["tasks"]]
    doc["validators"]["audio"]["calibration"] = str(root / doc["validators"]["audio"]["calibration"])
    doc["exclude"] = [r for r in doc["exclude"] if "isa" not in r]
    doc["axes"].pop("isa", None)
    if isa is not None:
        doc["axes"]["isa"] = isa
    return doc


@pytest.mark.benchmark(group="isa-axis")
@pytest.mark.parametrize("isa", [None, ["native"]], ids=["no-isa-axis", "isa-native"])
def test_expand_with_the_isa_axis_at_native(benchmark, isa) -> None:
    """The isa axis at native costs nothing: the same cells (ids, spec hashes, worker groups)
    as a matrix without it, expanded in the same time (compare the two rows)."""
    from harness.spec.matrix import expand, matrix_from_doc

    root = Path(__file__).resolve().parents[2] / "matrices"
    cells = benchmark(lambda: expand(matrix_from_doc(_smoke_doc(isa), root / "smoke.toml")))
    plain = expand(matrix_from_doc(_smoke_doc(None), root / "smoke.toml"))
    assert [(c.cell_id, c.spec_hash, c.group_key) for c in cells] == [
        (c.cell_id, c.spec_hash, c.group_key) for c in plain
    ]
    benchmark.extra_info["cells"] = len(cells)
