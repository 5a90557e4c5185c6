"""The trained stand-ins: shipped files pinned, loaded as a plain folder, run by ``harness exec``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.models.loading import STANDIN_PREFIX, ModelNotFound, resolve_model
from harness.models.standins import (
    PINNED,
    STANDIN_NAMES,
    STANDIN_ROOT,
    StandinCorrupted,
    folder_digests,
    standin_dir,
)
from harness.models.tiny import weights_digest

REPO = Path(__file__).resolve().parents[2]
SIZE_LIMIT = 20_000_000  # all stand-ins together, bytes


def test_both_stand_ins_are_shipped_and_every_file_is_pinned():
    assert set(STANDIN_NAMES) == {"musicgen", "gpt2"}
    total = 0
    for name in STANDIN_NAMES:
        folder = STANDIN_ROOT / name
        assert folder_digests(folder) == PINNED[name], f"{name}: shipped files and pinned digests disagree"
        assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= set(PINNED[name])
        total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= SIZE_LIMIT


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_changed_or_missing_file_is_one_clear_error(tmp_path, damage):
    shutil.copytree(STANDIN_ROOT / "gpt2", tmp_path / "gpt2")
    target = tmp_path / "gpt2" / "model.safetensors"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[-1] ^= 1
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    with pytest.raises(StandinCorrupted) as err:
        standin_dir("gpt2", root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(target) in message
    assert ("not the pinned" if damage == "flip" else "missing") in message


def test_the_short_name_is_the_package_folder_with_its_weights_hash():
    for name in STANDIN_NAMES:
        resolved = resolve_model(STANDIN_PREFIX + name)
        assert resolved.source == "standin"
        assert Path(resolved.path) == standin_dir(name) == STANDIN_ROOT / name
        assert resolved.weights_sha256 == weights_digest(STANDIN_ROOT / name)
    with pytest.raises(ModelNotFound, match="unknown stand-in model 'standin:nope'; known: standin:gpt2"):
        resolve_model("standin:nope")


@pytest.mark.slow
def test_harness_exec_runs_each_stand_in_through_from_pretrained(cli, tmp_path):
    """The smoke tasks: the CLI loads the package folder the way it loads an HF snapshot."""
    for task in ("standin-gpt2-chatbot", "standin-musicgen-pop"):
        res = cli("exec", str(REPO / "matrices" / "tasks" / f"{task}.json"), "--out", str(tmp_path), "--threads", "1")
        assert res.returncode == 0, res.stderr
    response = json.loads((tmp_path / "standin-gpt2-chatbot.response.json").read_text())
    assert response["model"] == "standin:gpt2"
    assert response["choices"][0]["message"]["content"].strip()
    assert (tmp_path / "standin-musicgen-pop.wav").stat().st_size > 1000
    for task, name in (("standin-gpt2-chatbot", "gpt2"), ("standin-musicgen-pop", "musicgen")):
        meta = json.loads((tmp_path / f"{task}.digests.json").read_text())["model"]
        assert meta["model_path_source"] == "standin"
        assert meta["weights_sha256"] == weights_digest(STANDIN_ROOT / name)
