"""The answer-first summary, the generic verdict map, the report.json upgrade path and
``harness show``: new dimensions appear without code changes, v1 documents still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.model import ANALYSIS_SCHEMA_VERSION, Analysis, DimensionSummary
from harness.analysis.saved import upgrade_analysis
from harness.analysis.summary import summarize
from harness.report.heatmap import map_columns, verdict_map
from harness.report.run import render_json, render_markdown
from tests.report.test_report import AUDIO, SKIPPED, TEXT, make_analysis


def test_summary_decides_counts_rule_and_findings() -> None:
    s = summarize(make_analysis())
    assert s.verdicts == {"not_ready": 1, "ready": 1, "skipped": 1}
    assert s.rule_by_config == {AUDIO: None, TEXT: "bitwise", SKIPPED: None}
    assert s.rule_needed == "bitwise"
    assert s.headline.startswith("Keep 1 configuration(s) off the network")
    assert [f.severity for f in s.findings][:2] == ["critical", "critical"]
    assert {f.dimension for f in s.findings if f.kind == "divergent-dimension"} == {"process", "batch"}
    assert "Test CPU @ 3.00GHz (8 CPUs); no GPU; torch 2.5.1+cpu; transformers 5.0.0" in s.environment


def test_tolerance_configs_name_the_rule_the_network_needs() -> None:
    a = make_analysis()
    a.configs[0].verdict = "ready_with_tolerance"
    a.configs[0].dimensions = {"threads": DimensionSummary(pairs=4, levels={"tokens": 4}, worst="tokens")}
    s = summarize(a)
    # it passed through the validator the matrix names (here composite), which the network then needs
    assert s.rule_by_config[AUDIO] == "composite" and s.rule_needed == "composite"
    assert "validate with composite" in s.headline
    assert any(f.kind == "not-bitwise" and f.dimension == "threads" for f in s.findings)


def test_new_dimensions_appear_in_map_and_findings_without_code_changes() -> None:
    a = make_analysis()
    a.configs[1].dimensions["node"] = DimensionSummary(
        pairs=3, levels={"divergent": 3}, worst="divergent", first_divergence=[2, 4, 7]
    )
    a.configs[1].dimensions["zeta"] = DimensionSummary(pairs=1, levels={"bitwise": 1}, worst="bitwise")
    assert map_columns(a) == ["repeat", "process", "batch", "node", "zeta", "seed", "dtype"]
    _, rows = verdict_map(a)
    assert {(cell.config_id, cell.dimension) for _, cells in rows for cell in cells} == {
        (c.config_id, d) for c in a.configs for d in map_columns(a)
    }
    node = next(cell for _, cells in rows for cell in cells if cell.dimension == "node" and cell.config_id == TEXT)
    assert (node.level, node.title) == ("divergent", "node: 3 pair(s): divergent 3")
    text = " ".join(f.text for f in summarize(a).findings)
    assert "node: any sampled task diverges when another node runs it" in text and "first divergent step 2" in text
    md = render_markdown(a)
    assert "| Config | Verdict | repeat | process | batch | node | zeta | seed | dtype |" in md


def test_v1_report_json_is_upgraded_and_newer_is_refused() -> None:
    doc = json.loads(render_json(make_analysis()))
    assert doc["schema_version"] == ANALYSIS_SCHEMA_VERSION == 3
    v2 = upgrade_analysis({**doc, "schema_version": 2})  # 2 -> 3: the added fields have defaults
    assert v2.schema_version == 3
    doc.pop("summary"), doc.pop("warnings")
    doc["schema_version"] = 1
    a = upgrade_analysis(doc)
    assert a.schema_version == 3 and a.summary == summarize(make_analysis())
    with pytest.raises(ValueError, match="schema_version 4"):
        upgrade_analysis({**doc, "schema_version": 4})


def test_show_prints_the_map_and_findings_and_refuses_bad_input(cli, tmp_path: Path) -> None:
    a = make_analysis()
    a.summary = summarize(a)
    (tmp_path / "report.json").write_text(render_json(a))
    res = cli("show", str(tmp_path), "--width", "160")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Keep 1 configuration(s) off the network" in out and "Verdict map" in out
    assert "divergent" in out and "sensitive" in out and "critical" in out
    assert out.index("Verdict map") < out.index("Top findings")
    (tmp_path / "bad.json").write_text("{not json")
    bad = cli("show", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    missing = cli("show", str(tmp_path / "nothing-here"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_analysis_summary_round_trips_through_json() -> None:
    a = make_analysis()
    a.summary = summarize(a)
    assert Analysis.model_validate_json(render_json(a)) == a


def test_quantization_is_a_table_per_stage_never_raw_json() -> None:
    from harness.report.run import quantization_table

    c = make_analysis().configs[2]
    c.quantization = {
        "backend": "bitsandbytes",
        "bits": 8,
        "quantized_layers": 10,
        "linear_layers": 12,
        "stages": {
            "text": {"quantized_layers": 4, "linear_layers": 5, "skipped_examples": ["lm_head"]},
            "audio": {"quantized_layers": 6, "linear_layers": 7},
        },
    }
    _, rows = quantization_table(c)
    assert rows == [
        ["backend", "bitsandbytes"],
        ["bits", "8"],
        ["quantized layers", "10 of 12 Linear layers"],
        ["audio: quantized layers", "6 of 7 Linear layers"],
        ["text: quantized layers", "4 of 5 Linear layers"],
        ["text: skipped examples", "lm_head"],
    ]


def test_a_calibration_signer_is_in_the_evidence_line_and_unsigned_is_a_finding() -> None:
    """Issue 29: calibrations are labelled ``unsigned`` in the report's evidence line and the
    summary; a signed one names its key."""
    a = make_analysis()
    c = a.configs[0]
    c.validator = {
        "rule": "composite",
        "false_accept": 0.0,
        "false_reject": 0.0,
        "pairs": 80,
        "calibration_file": "cal.json",
        "sources": ["repeat", "process"],
        "signed_by": "unsigned",
    }
    c.thresholds = {"waveform_max_abs": 1e-5, "waveform_rel_l2": 1e-4}
    text = render_markdown(a)
    assert "calibration cal.json (unsigned), honest sources repeat, process" in text
    finding = next(f for f in summarize(a).findings if f.kind == "unsigned-calibration")
    assert finding.configs == [c.config_id] and "sign it with --sign KEY" in finding.text
    c.validator["signed_by"] = "signed by ed25519:0123456789abcdef (a trusted key, required by the matrix)"
    assert "calibration cal.json (signed by ed25519:0123456789abcdef" in render_markdown(a)
    assert not any(f.kind == "unsigned-calibration" for f in summarize(a).findings)
