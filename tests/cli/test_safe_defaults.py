"""Safe defaults, proved against real traps: a model folder whose config asks to run its own
Python (trust_remote_code stays off), pickle weights (safetensors only unless opted in; even
then torch's weights-only unpickler), task paths that leave the allowed folders, and a scan of
the harness source for eval/exec/pickle-style calls on data. (An npz artifact holding an
object array is refused in tests/store/test_store.py.)
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli.main import main
from tests.spec.test_hostile_inputs import assert_one_error_block

ROOT = Path(__file__).parent.parent.parent
EVIL_CODE = """from pathlib import Path
Path({marker!r}).write_text("custom code ran")
from transformers import PretrainedConfig, PreTrainedModel
class EvilConfig(PretrainedConfig):
    model_type = "evil-model"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


@pytest.fixture
def isolated_env():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _exec(capsys, task: Path, out: Path) -> tuple[int, str, str]:
    code = main(["exec", str(task), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def _gpt_task(path: Path, model: Path | str) -> Path:
    path.write_text(
        json.dumps(
            {
                "model": str(model),
                "messages": [{"role": "user", "content": "hello world"}],
                "seed": 1,
                "generation_config": {"max_new_tokens": 4, "do_sample": True, "top_k": 20},
            }
        )
    )
    return path


def _model_copy(tiny_gpt2: Path, target: Path) -> Path:
    shutil.copytree(tiny_gpt2, target)
    (target / "tiny-model.json").unlink()
    return target


def _evil_model(tiny_gpt2: Path, target: Path, model_type: str, marker: Path) -> Path:
    folder = _model_copy(tiny_gpt2, target)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    return folder


@pytest.mark.slow
def test_custom_model_code_is_refused_and_never_runs(capsys, tmp_path, tiny_gpt2, isolated_env):
    marker = tmp_path / "MARKER"
    folder = _evil_model(tiny_gpt2, tmp_path / "evil", "evil-model", marker)
    code, _, err = _exec(capsys, _gpt_task(tmp_path / "task.json", folder), tmp_path / "out")
    assert_one_error_block(code, err, "needs its own Python code", "HARNESS_TRUST_REMOTE_CODE=1")
    assert not marker.exists(), "the model folder's Python ran although trust_remote_code is off"


@pytest.mark.slow
def test_custom_code_beside_a_known_architecture_is_ignored(capsys, tmp_path, tiny_gpt2, isolated_env):
    """model_type gpt2 plus an auto_map: transformers' own GPT-2 code loads; evil.py never runs."""
    marker = tmp_path / "MARKER"
    folder = _evil_model(tiny_gpt2, tmp_path / "evil", "gpt2", marker)
    code, _out, err = _exec(capsys, _gpt_task(tmp_path / "task.json", folder), tmp_path / "out")
    assert code == 0, err
    assert not marker.exists()


@pytest.mark.slow
def test_the_trap_is_live_custom_code_runs_only_when_the_user_opts_in(tmp_path, tiny_gpt2):
    """Control for the two tests above: with HARNESS_TRUST_REMOTE_CODE=1 the same folder's code
    does run (in a separate process: it registers classes), so a missing marker there means
    the harness refused, not that the trap was broken."""
    marker = tmp_path / "MARKER"
    folder = _evil_model(tiny_gpt2, tmp_path / "evil", "evil-model", marker)
    env = {**os.environ, "HARNESS_TRUST_REMOTE_CODE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "exec",
            str(_gpt_task(tmp_path / "task.json", folder)),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert marker.exists()


@pytest.mark.slow
def test_pickle_weights_are_refused_unless_allowed(capsys, tmp_path, tiny_gpt2, isolated_env):
    import torch
    from safetensors.torch import load_file

    reference = _exec(capsys, _gpt_task(tmp_path / "tiny.json", tiny_gpt2), tmp_path / "ref")
    assert reference[0] == 0, reference[2]
    folder = _model_copy(tiny_gpt2, tmp_path / "pickled")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    task = _gpt_task(tmp_path / "pickled.json", folder)

    code, _, err = _exec(capsys, task, tmp_path / "out")
    assert_one_error_block(code, err, "no safetensors weights", "HARNESS_ALLOW_PICKLE_WEIGHTS=1")

    os.environ["HARNESS_ALLOW_PICKLE_WEIGHTS"] = "1"
    code, _out, err = _exec(capsys, task, tmp_path / "out")
    assert code == 0, err
    tokens = json.loads((tmp_path / "out" / "pickled.digests.json").read_text())["digests"]["tokens"]
    assert tokens == json.loads((tmp_path / "ref" / "tiny.digests.json").read_text())["digests"]["tokens"]


class _Payload:
    """Unpickling this would touch a marker file (what a malicious checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_opted_in_pickle_weights_still_never_run_code(capsys, tmp_path, tiny_gpt2, isolated_env):
    """HARNESS_ALLOW_PICKLE_WEIGHTS=1 admits .bin files, but transformers reads them with
    torch's weights-only unpickler: a checkpoint carrying a callable is refused."""
    import torch
    from safetensors.torch import load_file

    marker = tmp_path / "MARKER"
    folder = _model_copy(tiny_gpt2, tmp_path / "malicious")
    state = load_file(folder / "model.safetensors")
    torch.save({**state, "payload": _Payload(marker)}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    os.environ["HARNESS_ALLOW_PICKLE_WEIGHTS"] = "1"
    code, _, err = _exec(capsys, _gpt_task(tmp_path / "task.json", folder), tmp_path / "out")
    assert_one_error_block(code, err)
    assert not marker.exists()


# --- paths in tasks ------------------------------------------------------------------------
def _audio_task(path: Path, wav_path: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "model": "tiny:musicgen",
                "prompt": "blues",
                "audio_prompt": {"wav_path": wav_path},
                "generation_config": {"max_new_tokens": 4},
                "seed": 1,
            }
        )
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("wav_path", ["/etc/passwd", "../../x.wav", "link.wav"])
def test_task_paths_outside_the_allowed_folders_are_refused(
    capsys, tmp_path, tiny_musicgen, isolated_env, monkeypatch, wav_path
):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    (work / "link.wav").symlink_to("/etc/hostname")  # inside the folder by name, outside once resolved
    monkeypatch.chdir(work)
    os.environ.pop("HARNESS_ALLOWED_PATHS", None)
    code, _, err = _exec(capsys, _audio_task(tmp_path / "task.json", wav_path), tmp_path / "out")
    assert_one_error_block(code, err, "audio_prompt.wav_path", "outside the allowed folders", "HARNESS_ALLOWED_PATHS")
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_path_is_allowed_once_its_folder_is_listed(capsys, tmp_path, tiny_musicgen, isolated_env, monkeypatch):
    from harness.engines.audio_io import write_wav

    outside, work = tmp_path / "sounds", tmp_path / "work"
    outside.mkdir()
    work.mkdir()
    t = np.arange(16_000, dtype=np.float32) / 16_000
    write_wav(outside / "prompt.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).reshape(-1, 1), 16_000)
    monkeypatch.chdir(work)
    task = _audio_task(tmp_path / "task.json", str(outside / "prompt.wav"))
    os.environ.pop("HARNESS_ALLOWED_PATHS", None)
    code, _, err = _exec(capsys, task, tmp_path / "out")
    assert_one_error_block(code, err, "outside the allowed folders")
    os.environ["HARNESS_ALLOWED_PATHS"] = str(outside)
    code, _out, err = _exec(capsys, task, tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "task.wav").exists()


# --- no eval/exec of task content ----------------------------------------------------------
DANGEROUS_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
DYNAMIC_BUILTINS = {"eval", "exec", "compile", "__import__"}
# The dynamic imports on purpose: kinds.load_object resolves the task-kind registry's lazy
# "module:object" entries: the built-in lines, and the kinds and engines named in HARNESS_KINDS
# and HARNESS_ENGINES, environment variables the operator sets (tests, adapters); no task,
# matrix or run file reaches it, so no document a node receives can choose code to load. And the
# package root's __getattr__, which resolves only the names of its own constant PUBLIC table.
ALLOWED_DYNAMIC = {("kinds.py", "load_object"), ("__init__.py", "__getattr__")}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<dynamic>"
    return None


def unsafe_calls(source: str, filename: str) -> list[str]:
    """Lines that could turn data into code: eval/exec/compile/__import__ or import_module on
    non-constants, pickle-family loaders, yaml.load, torch.load without weights_only=True,
    np.load(allow_pickle=True), shell=True, os.system, trust_remote_code=True,
    use_safetensors=False."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def function_of(node: ast.AST) -> str | None:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node.name
        return None

    def flag(node: ast.AST, why: str) -> None:
        if (Path(filename).name, function_of(node)) not in ALLOWED_DYNAMIC:
            found.append(f"{filename}:{node.lineno}: {why}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DANGEROUS_MODULES:
                    flag(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in DANGEROUS_MODULES:
            flag(node, f"imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            const_args = all(isinstance(a, ast.Constant) for a in node.args)
            if name in DYNAMIC_BUILTINS and not const_args:
                flag(node, f"{name}() on a non-constant")
            elif name in DYNAMIC_BUILTINS and name in ("eval", "exec"):
                flag(node, f"{name}()")
            elif name.endswith("import_module") and not const_args:
                flag(node, "import_module() on a non-constant")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                flag(node, name)
            elif name == "torch.load" and _kw(node, "weights_only") is not True:
                flag(node, "torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
                flag(node, "np.load(allow_pickle=...)")
            elif name in ("os.system", "os.popen") or _kw(node, "shell") not in (None, False):
                flag(node, f"{name} through a shell")
            if _kw(node, "trust_remote_code") is True:
                flag(node, "trust_remote_code=True")
            if _kw(node, "use_safetensors") is False:
                flag(node, "use_safetensors=False")
    return found


def test_the_scanner_catches_what_it_looks_for():
    bad = """
import pickle
from dill import loads
def f(doc, m):
    eval(doc["x"]); exec("print(1)"); __import__(m); compile(doc, "f", "exec")
    importlib.import_module(doc["engine"]); yaml.load(doc); torch.load(doc)
    np.load(doc, allow_pickle=True); subprocess.run(doc, shell=True); os.system(doc)
    AutoModel.from_pretrained(doc, trust_remote_code=True, use_safetensors=False)
"""
    found = unsafe_calls(bad, "bad.py")
    for what in (
        "imports pickle",
        "imports from dill",
        "eval()",
        "exec()",
        "__import__() on a non-constant",
        "compile() on a non-constant",
        "import_module() on a non-constant",
        "yaml.load",
        "torch.load without weights_only=True",
        "np.load(allow_pickle",
        "through a shell",
        "os.system",
        "trust_remote_code=True",
        "use_safetensors=False",
    ):
        assert any(what in line for line in found), (what, found)
    ok = (
        'import json\n__import__("hashlib")\ntorch.load(p, weights_only=True)\n'
        "np.load(p, allow_pickle=False)\nyaml.safe_load(s)\n"
    )
    assert unsafe_calls(ok, "ok.py") == []
    plugin = "def load_object(ref):\n    importlib.import_module(ref)\n"
    assert unsafe_calls(plugin, "kinds.py") == [] and unsafe_calls(plugin, "other.py") != []


def test_no_harness_source_turns_data_into_code():
    files = sorted((ROOT / "harness").rglob("*.py"))
    assert len(files) > 20
    found = [line for path in files for line in unsafe_calls(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "\n".join(found)
