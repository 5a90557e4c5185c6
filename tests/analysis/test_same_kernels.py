"""An ``isa`` pair whose two sides read back one kernel class is no comparison: hand-made
records (no model, no worker) with the kernel classes a worker writes, so the rule is checked
on exactly the evidence the analysis decides from (the read-back class, never the level asked)."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from rich.console import Console

from harness.analysis.judgement import dimension_verdicts
from harness.analysis.run import analyze_run
from harness.digests import digest_array
from harness.report.junit import render_run
from harness.report.run import render_markdown
from harness.report.terminal import show
from harness.store.records import Axes, Record
from harness.store.run import RunStore
from harness.vocabulary import SAME_KERNELS

AVX512 = "aten-avx512/onednn-avx512_bf16"
AVX2 = "aten-avx2/onednn-avx2"
SCALAR = "aten-default/onednn-sse41"
CONFIG = "hand/float32/qnone/cpu/pon"


def write_run(tmp_path, executions: list[tuple[str, str | None, np.ndarray]], judged=("repeat", "isa")):
    """One configuration: per ``(isa, read-back kernel class, token ids)`` two repeats in one worker."""
    gates = {"fail_on": ["not_ready", "failed"], "verdict_dimensions": list(judged)}
    store = RunStore.create(tmp_path / "run", {"run_id": "hand", "matrix": {"spec": {"name": "hand", "gates": gates}}})
    for isa, kernels, ids in executions:
        for repeat in (0, 1):
            tail = "" if isa == "native" else f"/isa-{isa}"
            cell = f"hand/float32/qnone/seed1/cpu/t1/b1/pon/warm{tail}/w0/r{repeat}"
            digests = {"token_ids": digest_array(ids), "output": digest_array(ids), "tokens": digest_array(ids)}
            store.append(
                Record(
                    cell_id=cell,
                    spec_hash=f"s-{isa}",
                    config_id=CONFIG,
                    task_name="hand",
                    kind="gpt",
                    model="tiny:gpt2",
                    status="ok",
                    digests=digests,
                    artifact=store.write_artifact(cell.replace("/", "__"), {"token_ids": ids}),
                    axes=Axes(
                        dtype="float32", quantize_bits=None, seed=1, device="cpu", threads=1, isa=isa, repeat=repeat
                    ),
                    timings={"total_s": 0.01, "generate_s": 0.01},
                    determinism={"kernels": {"isa": isa, "class": kernels}} if kernels else {},
                )
            )
    store.unlock()
    return tmp_path / "run"


TOKENS = np.array([[1, 2, 3, 4]], dtype=np.int64)


def test_a_level_that_runs_natives_kernels_is_no_comparison(tmp_path):
    """An AVX2-only machine (Zen 3): native and avx2 both read back aten-avx2/onednn-avx2. Equal
    outputs there prove nothing about another CPU kind: untested with the reason, never bitwise."""
    a = analyze_run(write_run(tmp_path, [("native", AVX2, TOKENS), ("avx2", AVX2, TOKENS)], judged=("isa",)))
    (c,) = a.configs
    isa = c.dimensions["isa"]
    assert isa.pairs == 0 and isa.worst is None and not isa.levels
    assert isa.not_compared == 1 and isa.not_compared_reason == SAME_KERNELS
    assert c.verdict == "untested" and SAME_KERNELS in c.reason  # the one judged dimension compared nothing
    assert next(g for g in a.gates if g.config_id == CONFIG).passed  # untested: not in fail_on
    md = render_markdown(a)
    assert "untested (same kernels)" in md and f"1 pair(s) not compared: {SAME_KERNELS}" in md
    junit = render_run(a, dimension_verdicts(a)).decode()
    assert f"untested: isa: {SAME_KERNELS} (1 pair(s))" in junit and 'name="isa"' in junit
    finding = next(f for f in a.summary.findings if f.kind == "not-a-comparison")
    assert finding.dimension == "isa" and finding.configs == [CONFIG] and SAME_KERNELS in finding.text
    out = StringIO()
    show(a, Console(file=out, width=200, color_system=None))
    assert "untested (same kernels)" in out.getvalue()  # the terminal map says it in words


def test_same_kernels_never_count_as_agreement_beside_other_dimensions(tmp_path):
    """With repeat judged too, the verdict rests on the repeats alone; the isa executions at
    native's class are not a third node in the agreement figures."""
    a = analyze_run(write_run(tmp_path, [("native", AVX2, TOKENS), ("avx2", AVX2, TOKENS)]))
    (c,) = a.configs
    assert c.verdict == "ready" and c.reason.startswith("bitwise identical across repeat;")
    assert "isa" not in c.reason.split(";")[0] and f"isa: untested ({SAME_KERNELS})" in c.reason
    # only the two native executions are pooled: fewer than a 3-node group, so no triple is drawn
    assert c.agreement["bitwise"]["triples"] == 0


def test_other_kernel_classes_are_compared(tmp_path):
    """An AVX-512 machine: native and the AVX2 level read back two classes, a real comparison."""
    a = analyze_run(write_run(tmp_path, [("native", AVX512, TOKENS), ("below-native", AVX2, TOKENS)]))
    (c,) = a.configs
    isa = c.dimensions["isa"]
    assert isa.pairs == 1 and isa.worst == "bitwise" and isa.not_compared == 0
    assert c.verdict == "ready" and "isa" in c.reason and SAME_KERNELS not in c.reason
    assert c.agreement["bitwise"]["triples"] > 0
    assert not any(f.kind == "not-a-comparison" for f in a.summary.findings)


def test_mixed_levels_compare_only_the_other_class(tmp_path):
    """Zen 3 emulated: below-native resolved to scalar (compared), avx2 is native's class (set aside)."""
    other = np.array([[1, 2, 9, 4]], dtype=np.int64)
    runs = [("native", AVX2, TOKENS), ("avx2", AVX2, TOKENS), ("below-native", SCALAR, other)]
    a = analyze_run(write_run(tmp_path, runs))
    (c,) = a.configs
    isa = c.dimensions["isa"]
    assert isa.pairs == 1 and isa.worst == "divergent" and isa.first_divergence == [2]
    assert isa.not_compared == 1 and isa.worst_pair[1].endswith("isa-below-native/w0/r0")
    assert c.verdict == "not_ready" and c.decided_by == ["isa"]
    assert f"isa: 1 more pair(s) not compared ({SAME_KERNELS})" in c.reason
    assert f"1 more pair(s) not compared: {SAME_KERNELS}" in render_markdown(a)


@pytest.mark.parametrize("kernels", [(None, None), (AVX2, None)])
def test_records_without_a_read_back_class_are_compared_as_before(tmp_path, kernels):
    """Older records (or a side that read nothing back) cannot show one class: compared as before."""
    a = analyze_run(write_run(tmp_path, [("native", kernels[0], TOKENS), ("avx2", kernels[1], TOKENS)]))
    isa = a.configs[0].dimensions["isa"]
    assert isa.pairs == 1 and isa.worst == "bitwise" and isa.not_compared == 0
