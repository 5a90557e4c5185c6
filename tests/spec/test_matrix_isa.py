"""The matrix's ``isa`` and ``tf32`` axes: expansion, ids, hashes, skips and worker groups.

No model runs: matrices are written to tmp_path and expanded. Which kernel levels "this CPU"
can give is set by the ``cpu`` fixture (flags, machine, no caps in the environment), so the
tests say the same on any machine.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import isa
from harness.digests import digest_json
from harness.isa import ISA_NAMES, KERNEL_FLAGS, KNOBS, NATIVE
from harness.spec.matrix import MatrixError, expand, feasibility, load_matrix, matrix_from_doc

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "matrices" / "tasks" / "tiny-gpt2-chatbot.json"

HEADER = """\
name = "isa-test"
repeats = 2
workers = 2

[[tasks]]
name = "gpt"
file = "task.json"
"""


def _set_cpu(monkeypatch, flags):
    monkeypatch.setattr(isa, "cpu_flags", lambda: flags)
    monkeypatch.setattr(isa.platform, "machine", lambda: "x86_64")
    for knob in KNOBS:
        monkeypatch.delenv(knob, raising=False)


@pytest.fixture
def cpu(monkeypatch):
    """A CPU that gives every level, with no caps in the environment."""
    _set_cpu(monkeypatch, frozenset(KERNEL_FLAGS))
    return monkeypatch


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    shutil.copy(TASK, tmp_path / "task.json")  # `file =` resolves next to the matrix
    path = tmp_path / "m.toml"
    path.write_text(header + body)
    return path


def cells_of(tmp_path, body, available=("cpu",)):
    return expand(load_matrix(write(tmp_path, body)), available_devices=list(available))


def _old_spec_hash(cell) -> str:
    """The spec hash as versions without the isa/tf32 axes computed it."""
    a = cell.axes
    doc = {
        "task": cell.task_doc,
        "kind": cell.kind,
        "device": a.device,
        "threads": a.threads,
        "batch_size": a.batch_size,
        "profile": a.profile,
    }
    if a.load != "warm":
        doc["load"] = a.load
    return digest_json(doc)[:16]


# -- defaults keep earlier ids ----------------------------------------------------------------


def test_file_resolves_next_to_the_matrix(tmp_path, cpu):
    m = load_matrix(write(tmp_path, ""))
    assert m.tasks["gpt"][0] == "gpt"


def test_default_isa_is_native_and_ids_carry_no_kernel_part(tmp_path, cpu):
    cells = cells_of(tmp_path, "")
    assert len(cells) == 4  # 2 workers x 2 repeats
    for c in cells:
        assert c.axes.isa == NATIVE and c.axes.tf32 == "off"
        assert "isa" not in c.cell_id and "tf32" not in c.cell_id
        assert re.fullmatch(r"gpt/auto/qnone/seed42/cpu/tauto/b1/pon/warm/w\d/r\d", c.cell_id), c.cell_id
        assert c.spec_hash == _old_spec_hash(c)
        assert c.config_id == "gpt/auto/qnone/cpu/pon"
        assert c.skip_reason is None
        assert c.group_key == ("cpu", "on", NATIVE, "off", "current")


def test_explicit_defaults_equal_omitted_ones(tmp_path, cpu):
    a = cells_of(tmp_path, "")
    b = cells_of(tmp_path, '[axes]\nisa = ["native"]\ntf32 = ["off"]\n')
    assert [(c.cell_id, c.spec_hash, c.config_id) for c in a] == [(c.cell_id, c.spec_hash, c.config_id) for c in b]


def test_cold_load_still_hashes_as_before(tmp_path, cpu):
    for c in cells_of(tmp_path, '[axes]\nload = ["cold"]\n'):
        assert c.spec_hash == _old_spec_hash(c)


# -- the isa axis ----------------------------------------------------------------------------


def test_isa_axis_doubles_the_cells(tmp_path, cpu):
    base = cells_of(tmp_path, "")
    cells = cells_of(tmp_path, '[axes]\nisa = ["native", "avx2"]\n')
    assert len(cells) == 2 * len(base)
    native = [c for c in cells if c.axes.isa == NATIVE]
    avx2 = [c for c in cells if c.axes.isa == "avx2"]
    assert len(native) == len(avx2) == len(base)
    assert [c.cell_id for c in native] == [c.cell_id for c in base]
    assert len({c.cell_id for c in cells}) == len(cells)
    for c in avx2:
        assert "/isa-avx2/" in c.cell_id
        assert re.fullmatch(r"gpt/auto/qnone/seed42/cpu/tauto/b1/pon/warm/isa-avx2/w\d/r\d", c.cell_id)
        assert c.skip_reason is None
    by_id = {c.cell_id.replace("/isa-avx2", ""): c for c in avx2}
    for n in native:
        twin = by_id[n.cell_id]
        assert twin.config_id == n.config_id  # one configuration: isa is a comparison dimension
        assert twin.spec_hash != n.spec_hash  # asked for other kernels
        assert twin.group_key != n.group_key  # never one worker for two kernel levels
        assert twin.task_doc == n.task_doc


@pytest.mark.parametrize("name", [n for n in ISA_NAMES if n != NATIVE])
def test_every_level_has_its_own_id_and_group(tmp_path, cpu, name):
    cells = cells_of(tmp_path, f'[axes]\nisa = ["native", "{name}"]\n')
    other = [c for c in cells if c.axes.isa == name]
    assert other and all(f"/isa-{name}/" in c.cell_id for c in other)
    assert {c.group_key for c in other} == {("cpu", "on", name, "off", "current")}
    assert not {c.group_key for c in other} & {c.group_key for c in cells if c.axes.isa == NATIVE}


def test_group_keys_separate_every_level(tmp_path, cpu):
    cells = cells_of(tmp_path, "[axes]\nisa = [" + ", ".join(f'"{n}"' for n in ISA_NAMES) + "]\n")
    groups: dict = {}
    for c in cells:
        groups.setdefault(c.group_key, set()).add(c.axes.isa)
    assert all(len(levels) == 1 for levels in groups.values())
    assert {next(iter(v)) for v in groups.values()} == set(ISA_NAMES)


@pytest.mark.parametrize("value", ['"avx9"', '"AVX2"', "1", "true", '""'])
def test_unknown_isa_value_is_one_line_naming_the_field(tmp_path, value):
    with pytest.raises(MatrixError) as info:
        load_matrix(write(tmp_path, f"[axes]\nisa = [{value}]\n"))
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    assert "$.axes.isa" in msg and "m.toml" in msg


def test_empty_isa_axis_refused(tmp_path):
    with pytest.raises(MatrixError, match=r"\$\.axes\.isa"):
        load_matrix(write(tmp_path, "[axes]\nisa = []\n"))


@pytest.mark.parametrize("value", ['"yes"', '"ON"', "true"])
def test_unknown_tf32_value_names_the_field(tmp_path, value):
    with pytest.raises(MatrixError) as info:
        load_matrix(write(tmp_path, f"[axes]\ntf32 = [{value}]\n"))
    assert len(str(info.value).splitlines()) == 1 and "$.axes.tf32" in str(info.value)


def test_level_the_cpu_lacks_is_a_skipped_cell_with_the_reason(tmp_path, monkeypatch):
    _set_cpu(monkeypatch, frozenset({"sse4_1", "avx", "avx2", "fma"}))  # an AVX2-only CPU
    cells = cells_of(tmp_path, '[axes]\nisa = ["native", "avx2", "avx512"]\n')
    assert len(cells) == 12  # kept, never dropped
    for c in cells:
        if c.axes.isa == "avx512":
            assert c.skip_reason is not None
            assert "avx512" in c.skip_reason and "avx512f" in c.skip_reason and "lacks" in c.skip_reason
        else:
            assert c.skip_reason is None, c.cell_id


def test_level_wider_than_the_environment_cap_is_skipped(tmp_path, cpu):
    cpu.setenv("ATEN_CPU_CAPABILITY", "avx2")
    cells = cells_of(tmp_path, '[axes]\nisa = ["native", "avx2", "avx512_vnni"]\n')
    reasons = {c.axes.isa: c.skip_reason for c in cells}
    assert reasons[NATIVE] is None and reasons["avx2"] is None
    assert "ATEN_CPU_CAPABILITY=avx2" in reasons["avx512_vnni"]


def test_non_x86_machine_skips_every_level_but_native(tmp_path, cpu):
    cpu.setattr(isa.platform, "machine", lambda: "aarch64")
    cells = cells_of(tmp_path, '[axes]\nisa = ["native", "scalar"]\n')
    for c in cells:
        if c.axes.isa == NATIVE:
            assert c.skip_reason is None
        else:
            assert "aarch64" in c.skip_reason


def test_unreadable_flags_skip_with_the_reason(tmp_path, monkeypatch):
    _set_cpu(monkeypatch, None)
    cells = cells_of(tmp_path, '[axes]\nisa = ["native", "avx2"]\n')
    assert {c.skip_reason for c in cells if c.axes.isa == NATIVE} == {None}
    assert all("cannot be read" in c.skip_reason for c in cells if c.axes.isa == "avx2")


def test_isa_on_a_cuda_device_is_skipped_with_a_reason(tmp_path, cpu):
    cells = cells_of(
        tmp_path, '[axes]\ndevice = ["cpu", "cuda"]\nisa = ["native", "avx2"]\n', available=("cpu", "cuda:0")
    )
    by = {(c.axes.device, c.axes.isa): c.skip_reason for c in cells}
    assert by[("cpu", NATIVE)] is None and by[("cpu", "avx2")] is None and by[("cuda:0", NATIVE)] is None
    why = by[("cuda:0", "avx2")]
    assert why is not None and "avx2" in why and "cuda:0" in why and "native" in why


def test_unavailable_device_reason_comes_first(tmp_path, cpu):
    cells = cells_of(tmp_path, '[axes]\ndevice = ["cuda"]\nisa = ["avx2"]\ntf32 = ["on"]\n')
    assert {c.skip_reason for c in cells} == {"cuda:0 is not available on this machine"}


# -- the tf32 axis ---------------------------------------------------------------------------


def test_tf32_on_a_cpu_is_skipped_with_a_reason(tmp_path, cpu):
    cells = cells_of(tmp_path, '[axes]\ntf32 = ["off", "on"]\n')
    assert len(cells) == 8
    for c in cells:
        if c.axes.tf32 == "on":
            assert c.skip_reason is not None and "tf32" in c.skip_reason and "cpu" in c.skip_reason
        else:
            assert c.skip_reason is None


def test_tf32_on_cuda_ids_config_and_group(tmp_path, cpu):
    cells = cells_of(tmp_path, '[axes]\ndevice = ["cuda:0"]\ntf32 = ["off", "on"]\n', available=("cpu", "cuda:0"))
    on = [c for c in cells if c.axes.tf32 == "on"]
    off = [c for c in cells if c.axes.tf32 == "off"]
    assert len(on) == len(off) == 4
    assert all(c.skip_reason is None for c in cells)
    for c in off:
        assert "tf32" not in c.cell_id and c.config_id == "gpt/auto/qnone/cuda0/pon"
        assert c.spec_hash == _old_spec_hash(c)
    for c in on:
        assert "/warm/tf32/" in c.cell_id
        assert c.config_id == "gpt/auto/qnone/cuda0/pon/tf32"  # TF32 is a configuration
        assert c.group_key == ("cuda:0", "on", NATIVE, "on", "current")
    off_hashes = {c.spec_hash for c in off}
    assert not off_hashes & {c.spec_hash for c in on}


def test_isa_and_tf32_parts_are_ordered(tmp_path, cpu):
    # isa before tf32 in a cell id (a cuda isa cell is skipped but still named)
    cells = cells_of(
        tmp_path, '[axes]\ndevice = ["cuda:0"]\nisa = ["avx2"]\ntf32 = ["on"]\n', available=("cpu", "cuda:0")
    )
    assert all("/warm/isa-avx2/tf32/w" in c.cell_id for c in cells)
    assert all(c.skip_reason and "caps CPU kernels" in c.skip_reason for c in cells)


# -- include / exclude / per-task axes -------------------------------------------------------


def test_exclude_with_isa(tmp_path, cpu):
    cells = cells_of(
        tmp_path, '[axes]\nthreads = [1, 2]\nisa = ["native", "avx2"]\n\n[[exclude]]\nisa = "avx2"\nthreads = 2\n'
    )
    combos = {(c.axes.isa, c.axes.threads) for c in cells}
    assert combos == {(NATIVE, 1), (NATIVE, 2), ("avx2", 1)}
    assert len(cells) == 3 * 4


def test_exclude_isa_list(tmp_path, cpu):
    cells = cells_of(tmp_path, '[axes]\nisa = ["native", "avx2", "scalar"]\n\n[[exclude]]\nisa = ["avx2", "scalar"]\n')
    assert {c.axes.isa for c in cells} == {NATIVE}


def test_exclude_with_unknown_isa_names_the_rule(tmp_path):
    with pytest.raises(MatrixError) as info:
        load_matrix(write(tmp_path, '[[exclude]]\nisa = "avx9"\n'))
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and "$.exclude[0]" in msg and "isa" in msg


def test_include_with_isa_adds_the_cell(tmp_path, cpu):
    cells = cells_of(tmp_path, '[[include]]\nisa = "avx2"\n')
    assert {c.axes.isa for c in cells} == {NATIVE, "avx2"}
    assert len(cells) == 8


def test_include_with_unknown_isa_refused(tmp_path):
    with pytest.raises(MatrixError, match=r"\$\.include\[0\]"):
        load_matrix(write(tmp_path, '[[include]]\nisa = "AVX-512"\n'))


def test_per_task_isa_override(tmp_path, cpu):
    header = HEADER + 'axes = { isa = ["avx2", "scalar"] }\n'
    cells = expand(load_matrix(write(tmp_path, "", header=header)), available_devices=["cpu"])
    assert {c.axes.isa for c in cells} == {"avx2", "scalar"}


def test_per_task_unknown_isa_refused_at_expansion(tmp_path, cpu):
    header = HEADER + 'axes = { isa = ["avx9"] }\n'
    matrix = load_matrix(write(tmp_path, "", header=header))
    with pytest.raises(MatrixError) as info:
        expand(matrix, available_devices=["cpu"])
    assert "isa" in str(info.value) and "gpt" in str(info.value)


# -- feasibility directly --------------------------------------------------------------------


def _values(**over):
    return {
        "dtype": "float32",
        "quantize_bits": None,
        "seed": 0,
        "device": "cpu",
        "threads": None,
        "batch_size": 1,
        "profile": "on",
        "load": "warm",
        "isa": NATIVE,
        "tf32": "off",
        **over,
    }


def test_feasibility_without_isa_key_is_native(cpu):
    values = _values()
    del values["isa"], values["tf32"]
    assert feasibility("gpt", values, ["cpu"]) is None


def test_feasibility_isa(cpu):
    assert feasibility("gpt", _values(isa="avx512_bf16"), ["cpu"]) is None
    cpu.setattr(isa, "cpu_flags", lambda: frozenset({"sse4_1"}))
    assert "avx2" in feasibility("gpt", _values(isa="avx2"), ["cpu"])
    assert feasibility("gpt", _values(isa="scalar"), ["cpu"]) is None


# -- property --------------------------------------------------------------------------------

_subsets = lambda xs: st.lists(st.sampled_from(xs), min_size=1, max_size=len(xs), unique=True)


@settings(max_examples=25, deadline=None)
@given(isas=_subsets(list(ISA_NAMES)), tf32=_subsets(["off", "on"]), threads=_subsets([1, 2]))
def test_expansion_multiplies_and_ids_are_unique(isas, tf32, threads):
    doc = {
        "name": "p",
        "repeats": 1,
        "workers": 2,
        "tasks": [{"name": "gpt", "file": str(TASK)}],
        "axes": {"isa": isas, "tf32": tf32, "threads": threads},
    }
    with pytest.MonkeyPatch.context() as mp:  # a CPU giving every level (no function fixture under given)
        _set_cpu(mp, frozenset(KERNEL_FLAGS))
        cells = expand(matrix_from_doc(doc), available_devices=["cpu"])
    assert len(cells) == 2 * len(isas) * len(tf32) * len(threads)
    assert len({c.cell_id for c in cells}) == len(cells)
    for c in cells:
        assert ("/isa-" in c.cell_id) == (c.axes.isa != NATIVE)
        assert ("/tf32" in c.cell_id) == (c.axes.tf32 == "on") == ("/tf32" in c.config_id)
        assert (c.skip_reason is not None) == (c.axes.tf32 == "on")  # every level given; tf32 on a cpu
        assert "/isa" not in c.config_id
    groups: dict = {}
    for c in cells:
        groups.setdefault(c.group_key, set()).add((c.axes.isa, c.axes.tf32))
    assert all(len(v) == 1 for v in groups.values())
    # a spec hash never spans two kernel levels or TF32 modes
    by_hash: dict = {}
    for c in cells:
        by_hash.setdefault(c.spec_hash, set()).add((c.axes.isa, c.axes.tf32))
    assert all(len(v) == 1 for v in by_hash.values())


@pytest.mark.parametrize(
    ("flags", "skipped"),
    [
        (frozenset(KERNEL_FLAGS), False),  # an AVX-512 CPU: below-native is AVX2-class there
        (frozenset({"sse4_1", "avx", "avx2", "fma"}), False),  # a Zen 3: scalar there
        (frozenset({"sse4_1"}), True),  # ATen's default kernels only: nothing narrower
    ],
)
def test_below_native_keeps_its_name_in_ids_and_hashes_on_every_machine(tmp_path, monkeypatch, flags, skipped):
    """The cell id and spec hash say ``below-native`` whatever it resolves to here, so one matrix
    has one set of ids on every machine; where no narrower level exists the cell is skipped with
    the reason, never dropped or run at native."""
    _set_cpu(monkeypatch, flags)
    cells = cells_of(tmp_path, '[axes]\nisa = ["native", "below-native"]\n')
    below = [c for c in cells if c.axes.isa == isa.BELOW_NATIVE]
    assert len(below) == 4 and all("/warm/isa-below-native/w" in c.cell_id for c in below)
    assert len({c.spec_hash for c in below}) == 1 and below[0].group_key[2] == isa.BELOW_NATIVE
    reasons = {c.skip_reason for c in below}
    if skipped:
        (why,) = reasons
        assert why is not None and "below-native" in why and "narrower" in why
    else:
        assert reasons == {None}
    _set_cpu(monkeypatch, frozenset(KERNEL_FLAGS))
    again = cells_of(tmp_path, '[axes]\nisa = ["native", "below-native"]\n')
    assert [(c.cell_id, c.spec_hash) for c in again] == [(c.cell_id, c.spec_hash) for c in cells]
