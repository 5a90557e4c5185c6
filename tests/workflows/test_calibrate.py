"""harness calibrate end to end, as a maintainer calibrates their own model: a study matrix on a
model in a local folder (not one the harness builds by name), harness run, harness calibrate, a
matrix naming the file, verdicts; a planted cheat; the bad input lines; and another machine's
bundle (the Zen 3 reference, when ../shared is here) as an honest source."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.spec.matrix import dump_matrix

ROOT = Path(__file__).resolve().parents[2]
GENERATION = {"max_new_tokens": 16, "do_sample": True, "top_k": 250, "top_p": 1.0, "temperature": 1.0}
PROMPTS = ("80s pop track with bassy drums and synth", "calm acoustic guitar with a soft piano melody")


def shared_bundle() -> Path | None:
    """The Zen 3 reference bundle: ../shared beside the repository, or beside the main checkout
    of a git worktree (as tests/peer/conftest.py finds the reference runners)."""
    from tests.peer.conftest import REPO, _git_common_parent

    candidates = [REPO.parent / "shared"]
    main = _git_common_parent(REPO)
    if main is not None:
        candidates.append(main.parent / "shared")
    name = Path("reference") / "bundles" / "zen3-avx2-shared.zip"
    return next((c / name for c in candidates if (c / name).is_file()), None)


def _matrix(tmp_path: Path, name: str, model: str, **over: object) -> Path:
    doc = {
        "schema_version": 1,
        "name": name,
        "repeats": 2,
        "workers": 1,
        "timeout_s": 300,
        "tasks": [
            {"name": f"prompt{i}", "task": {"model": model, "prompt": p, "seed": 1, "generation_config": GENERATION}}
            for i, p in enumerate(PROMPTS)
        ],
        "axes": {"dtype": ["float32"], "seed": [1, 2], "threads": [1, 2], "batch_size": [1]},
        "gates": {"fail_on": ["failed"]},
        **over,
    }
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_matrix(doc))
    return path


def _env(engine: str | None = None) -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if engine:
        env["HARNESS_ENGINES"] = f"audio=tests.doubles:{engine}"
    return env


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_musicgen) -> dict[str, Path]:
    """A local-folder model's study run and its calibration (made once for the module)."""
    from conftest import run_cli

    tmp = tmp_path_factory.mktemp("calibrate")
    model = tmp / "my-musicgen"
    shutil.copytree(tiny_musicgen, model)  # a model saved to a folder, as a maintainer has one
    res = run_cli("run", str(_matrix(tmp, "study", str(model))), "--out", str(tmp / "run"), "--no-progress")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    cal = tmp / "cal.json"
    res = run_cli("calibrate", str(tmp / "run"), "--rule", "composite", "--out", str(cal), "--report", str(tmp / "rep"))
    assert res.returncode == 0, res.stdout + res.stderr
    return {"tmp": tmp, "model": model, "run": tmp / "run", "cal": cal}


@pytest.mark.slow
def test_a_study_calibrates_its_own_model_and_a_matrix_naming_it_decides(study, cli):
    from harness.spec.calibration import load_calibration

    cal = load_calibration(study["cal"])
    (entry,) = cal.entries
    scope = entry.scope
    assert cal.rule == "composite" and scope.model == str(study["model"]) and scope.dtype == "float32"
    assert set(scope.sources) == {"repeat", "threads"} and scope.new_tokens == (16, 16)
    assert scope.gpus == [] and scope.libraries and "torch" in scope.libraries and scope.kernel_classes
    # split by task: 4 tasks (2 prompts x 2 seeds), 2 held out; every held-out honest pair and cheat counted
    assert "4 tasks (2 calibrate, 2 held out, split by task)" in cal.made_by
    # per task 4 executions: 2 repeat pairs and 4 threads pairs (1 vs 2 threads, whichever repeat)
    assert entry.false_reject.pairs == 2 * 6 and entry.false_reject.errors == 0
    assert entry.false_accept.pairs >= 2 * 15 and entry.false_accept.errors == 0
    report = json.loads((study["tmp"] / "rep" / "calibration.json").read_text())
    assert (
        report["calibration_digest"] == cal.digest and report["configs"][0]["cheats"]["another seed"]["accepted"] == 0
    )
    assert (study["tmp"] / "rep" / "det.png").read_bytes()[:4] == b"\x89PNG"
    assert "| threads |" in (study["tmp"] / "rep" / "calibration.md").read_text()

    tmp = study["tmp"]
    named = {"validators": {"audio": {"rule": "composite", "calibration": str(study["cal"])}}}
    over = {"gates": {"fail_on": ["not_ready", "failed"], "verdict_dimensions": ["repeat", "threads"]}, **named}
    over["axes"] = {"dtype": ["float32"], "seed": [1], "threads": [1, 2], "batch_size": [1]}
    res = cli("run", str(_matrix(tmp, "verify", str(study["model"]), **over)), "--out", str(tmp / "v"), "--no-progress")
    configs = json.loads((tmp / "v" / "report.json").read_text())["configs"]
    for c in configs:  # honest pairs within the calibrated bounds pass through the named validator
        threads = c["dimensions"]["threads"]["worst"]
        expected = "ready" if threads == "bitwise" else "ready_with_tolerance"
        assert c["verdict"] == expected, (c["config_id"], c["reason"])
        assert c["out_of_scope"] is None
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    over["repeats"] = 3  # every second call in a process swaps the audio, codes kept: a planted cheat
    env = _env("WaveformSwapMusicgen")
    res = cli(
        "run",
        str(_matrix(tmp, "plant", str(study["model"]), **over)),
        "--out",
        str(tmp / "p"),
        "--no-progress",
        env=env,
    )
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    for c in json.loads((tmp / "p" / "report.json").read_text())["configs"]:
        assert c["verdict"] == "not_ready" and c["reason"].startswith("suspicious"), c["reason"]


@pytest.mark.slow
def test_bad_study_input_is_one_line(study, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study["run"], run)
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text("\n".join(lines[:-3]) + "\n")
    res = cli("calibrate", str(run), "--out", str(tmp_path / "x.json"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "the study is incomplete: 3 cell(s) missing (first: " in res.stderr and "never made on fewer" in res.stderr

    failed = json.loads(lines[0])
    failed.update(status="failed", reason="worker lost", digests={}, artifact=None, receipt=None)
    (run / "results.jsonl").write_text("\n".join([*lines, json.dumps(failed)]) + "\n")
    res = cli("calibrate", str(run), "--out", str(tmp_path / "x.json"))
    assert res.returncode == 2 and f"1 failed (first: {failed['cell_id']}: worker lost)" in res.stderr, res.stderr

    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    artifact = next((run / "artifacts").glob("*.npz"))
    artifact.write_bytes(artifact.read_bytes()[:-40])  # a corrupted run
    res = cli("calibrate", str(run), "--out", str(tmp_path / "x.json"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr

    res = cli("calibrate", str(tmp_path / "absent"), "--out", str(tmp_path / "x.json"))
    assert res.returncode == 2 and "no such run directory or bundle" in res.stderr
    assert not (tmp_path / "x.json").exists()  # nothing written on bad input


@pytest.mark.slow
def test_calibrates_across_the_zen3_machine_bundle(tmp_path, cli, tiny_musicgen):
    """The Zen 3 bundle (AVX2-only kernels, tiny MusicGen seeds 42 and 43) beside a run of the same
    tasks here: its executions are honest ``machine`` pairs, and its kernel class enters the scope."""
    bundle = shared_bundle()
    if bundle is None:
        pytest.skip("the Zen 3 reference bundle is not here (../shared/reference/bundles, beside the repository)")
    task = json.loads((ROOT / "matrices" / "tasks" / "tiny-musicgen-pop.json").read_text())
    doc = {
        "schema_version": 1,
        "name": "here",
        "repeats": 1,
        "workers": 1,
        "timeout_s": 300,
        "tasks": [{"name": "musicgen-pop", "task": task}],
        "axes": {"dtype": ["float32"], "seed": [42, 43], "threads": [1, 2], "batch_size": [1]},
        "gates": {"fail_on": ["failed"]},
    }
    (tmp_path / "here.toml").write_text(dump_matrix(doc))
    res = cli("run", str(tmp_path / "here.toml"), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = cli("calibrate", str(tmp_path / "run"), str(bundle), "--out", str(tmp_path / "cal.json"))
    assert res.returncode == 0, res.stdout + res.stderr
    from harness.spec.calibration import load_calibration

    (entry,) = load_calibration(tmp_path / "cal.json").entries  # float32 only: the other configurations ran there alone
    assert "machine" in entry.scope.sources and "aten-avx2/onednn-avx2" in entry.scope.kernel_classes
    assert "gpt: left out" in res.stdout  # the bundle's GPT-2 has nothing to calibrate under composite


def test_the_study_matrices_validate(capsys):
    """The studies of the real models cannot run here without their weights, but they load,
    name their tasks and expand into cells (harness validate reads matrices too)."""
    from harness.cli.main import main

    studies = sorted((ROOT / "matrices" / "studies").glob("*.toml"))
    assert {p.stem for p in studies} >= {"tiny-musicgen", "musicgen-small", "gpt2"}
    assert main(["validate", *map(str, studies)]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == len(studies) and "matrix study-musicgen-small: 2 task(s), 144 cell(s)" in out
    broken = ROOT / "matrices" / "studies" / "tiny-musicgen.toml"
    assert main(["validate", str(broken.with_name("absent.toml"))]) == 2


@pytest.mark.slow
def test_the_replay_rule_calibrates_from_the_same_study(study, cli, tmp_path):
    """--rule replay on the study: this process replays every distinct execution and each cheat
    (re-decoded with its model); the entry carries the margin and the decoder bounds."""
    from harness.spec.calibration import load_calibration

    out = tmp_path / "replay.json"
    res = cli("calibrate", str(study["run"]), "--rule", "replay", "--out", str(out), "--report", str(tmp_path / "r"))
    assert res.returncode == 0, res.stdout + res.stderr
    cal = load_calibration(out)
    (entry,) = cal.entries
    assert cal.rule == "replay" and entry.replay_margin is not None and 0 < entry.replay_margin < 0.01
    assert entry.waveform_max_abs > 0 and set(entry.scope.sources) == {"repeat", "threads"}
    assert entry.false_reject.errors == 0 and entry.false_reject.pairs >= 2  # distinct held-out executions
    assert entry.false_accept.errors == 0 and entry.false_accept.pairs >= 2 * 14
    report = json.loads((tmp_path / "r" / "calibration.json").read_text())
    assert report["configs"][0]["cheats"]["a code forced"]["accepted"] == 0


@pytest.mark.slow
def test_a_margin_above_the_ceiling_leaves_the_configuration_out_in_one_line(study, monkeypatch):
    """A trained model's bfloat16 replays can need a margin above MAX_REPLAY_MARGIN (the stand-in's
    did: 2.0, docs/standins.md): the configuration is left out with the measured figures, never a
    margin above the ceiling in a file and never a traceback."""
    from harness.workflows import calibrate_replay
    from harness.workflows.calibrate import CalibrationInputError, run_calibration

    monkeypatch.setattr(calibrate_replay, "MAX_REPLAY_MARGIN", 1e-12)
    with pytest.raises(CalibrationInputError) as err:
        run_calibration([study["run"]], "replay")
    line = str(err.value)
    assert "\n" not in line and line.startswith("no configuration could be calibrated: audio ")
    assert "is above the ceiling 1e-12" in line and "the replay rule is not calibrated for it; left out" in line
