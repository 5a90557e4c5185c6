"""harness.isa: level names, what a machine can give, the worker environment, kernel classes.

Pure logic: flags, machine and environment are passed in (never read from this CPU), so the
tests say the same on any machine.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import isa
from harness.errors import HarnessError
from harness.isa import (
    ISA_NAMES,
    KERNEL_FLAGS,
    KNOBS,
    LEVELS,
    NATIVE,
    IsaError,
    apply,
    check_name,
    environment_ceiling,
    environment_for,
    kernel_class,
    onednn_family,
    unavailable,
)

ALL_FLAGS = frozenset(KERNEL_FLAGS)
X86 = "x86_64"


# -- names ------------------------------------------------------------------------------------


def test_isa_names_start_with_native_then_every_level_widest_first():
    assert ISA_NAMES[0] == NATIVE == "native"
    assert ISA_NAMES[1:] == tuple(LEVELS)
    ranks = [LEVELS[n].rank for n in ISA_NAMES[1:]]
    assert ranks == sorted(ranks, reverse=True)


def test_level_ranks_are_unique_and_names_match_keys():
    ranks = [level.rank for level in LEVELS.values()]
    assert len(set(ranks)) == len(ranks)
    assert all(name == level.name for name, level in LEVELS.items())


def test_every_needed_flag_is_a_kernel_flag():
    # a need outside KERNEL_FLAGS could never be met: cpu_flags keeps only KERNEL_FLAGS
    for level in LEVELS.values():
        assert set(level.needs) <= ALL_FLAGS, level.name


@pytest.mark.parametrize("name", ISA_NAMES)
def test_check_name_accepts_known(name):
    assert check_name(name) == name


@pytest.mark.parametrize("bad", ["avx9", "AVX2", "", "native ", "avx-512"])
def test_check_name_unknown_is_one_line_naming_value_and_known(bad):
    with pytest.raises(IsaError) as info:
        check_name(bad)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert repr(bad) in msg
    for known in ISA_NAMES:
        assert known in msg
    assert isinstance(info.value, HarnessError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("fn", [lambda n: unavailable(n, flags=ALL_FLAGS, machine=X86, environ={}), environment_for])
def test_unknown_name_refused_by_every_entry_point(fn):
    with pytest.raises(IsaError, match="avx9"):
        fn("avx9")


# -- unavailable ------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [frozenset(), ALL_FLAGS, None])
@pytest.mark.parametrize("machine", [X86, "aarch64"])
def test_native_is_always_available(flags, machine):
    env = {"ATEN_CPU_CAPABILITY": "default"}
    assert unavailable(NATIVE, flags=flags, machine=machine, environ=env) is None


def test_missing_flags_are_named():
    flags = frozenset({"sse4_1", "avx", "avx2", "fma"})  # an AVX2-only CPU
    assert unavailable("avx2", flags=flags, machine=X86, environ={}) is None
    assert unavailable("scalar", flags=flags, machine=X86, environ={}) is None
    why = unavailable("avx2_vnni", flags=flags, machine=X86, environ={})
    assert why is not None and "avx_vnni" in why and "avx2_vnni" in why
    why = unavailable("avx512_bf16", flags=flags, machine=X86, environ={})
    for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"):
        assert f in why
    assert "avx2," not in why and "fma" not in why  # only what is missing


def test_only_the_missing_flags_are_named():
    flags = ALL_FLAGS - {"avx512_bf16"}
    why = unavailable("avx512_bf16", flags=flags, machine=X86, environ={})
    assert why == "isa avx512_bf16 needs CPU flags avx512_bf16, which this CPU lacks"
    assert unavailable("avx512_vnni", flags=flags, machine=X86, environ={}) is None


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le", "s390x", "riscv64"])
def test_non_x86_machine_is_named(machine):
    why = unavailable("avx2", flags=ALL_FLAGS, machine=machine, environ={})
    assert why is not None and machine in why and "x86-64" in why


@pytest.mark.parametrize("machine", ["x86_64", "AMD64", "amd64", "i686", "x86"])
def test_x86_spellings_accepted(machine):
    assert unavailable("avx2", flags=ALL_FLAGS, machine=machine, environ={}) is None


def test_unreadable_flags_are_a_reason(monkeypatch):
    # flags=None means "read /proc/cpuinfo": make that unreadable
    monkeypatch.setattr(isa, "cpu_flags", lambda: None)
    why = unavailable("avx2", flags=None, machine=X86, environ={})
    assert why is not None and "cannot be read" in why and "avx2" in why


def test_flags_none_reads_this_cpu(monkeypatch):
    monkeypatch.setattr(isa, "cpu_flags", lambda: frozenset({"sse4_1"}))
    assert unavailable("scalar", flags=None, machine=X86, environ={}) is None
    assert "avx2" in unavailable("avx2", flags=None, machine=X86, environ={})


def test_cpu_flags_unreadable_file_is_none(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("no")

    monkeypatch.setattr(isa, "open", refuse, raising=False)  # shadows the builtin in harness.isa only
    assert isa.cpu_flags() is None


def test_cpu_flags_keeps_only_kernel_flags(monkeypatch):
    import io

    text = "processor\t: 0\nflags\t\t: fpu sse4_1 avx avx2 fma pni avx512f\n"
    monkeypatch.setattr(isa, "open", lambda *a, **k: io.StringIO(text), raising=False)
    assert isa.cpu_flags() == frozenset({"sse4_1", "avx", "avx2", "fma", "avx512f"})
    monkeypatch.setattr(isa, "open", lambda *a, **k: io.StringIO("processor\t: 0\n"), raising=False)
    assert isa.cpu_flags() is None


def test_aten_cap_in_environment_refuses_avx512_levels_naming_the_variable():
    env = {"ATEN_CPU_CAPABILITY": "avx2"}
    for name in ("avx512", "avx512_vnni", "avx512_bf16"):
        why = unavailable(name, flags=ALL_FLAGS, machine=X86, environ=env)
        assert why is not None and "ATEN_CPU_CAPABILITY=avx2" in why and name in why
    for name in ("avx2", "avx2_vnni", "scalar"):
        assert unavailable(name, flags=ALL_FLAGS, machine=X86, environ=env) is None


def test_default_aten_cap_allows_only_scalar():
    env = {"ATEN_CPU_CAPABILITY": "DEFAULT"}  # ATen's value is case-insensitive here
    assert unavailable("scalar", flags=ALL_FLAGS, machine=X86, environ=env) is None
    assert "ATEN_CPU_CAPABILITY=DEFAULT" in unavailable("avx2", flags=ALL_FLAGS, machine=X86, environ=env)


def test_missing_flags_reported_before_environment_cap():
    why = unavailable(
        "avx512", flags=frozenset({"sse4_1", "avx2", "fma"}), machine=X86, environ={"ATEN_CPU_CAPABILITY": "avx2"}
    )
    assert "avx512f" in why


def test_unknown_cap_values_are_ignored():
    env = {"ATEN_CPU_CAPABILITY": "zvector", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_ENABLE_INSTRUCTIONS": "?"}
    assert environment_ceiling(env) is None
    assert unavailable("avx512_bf16", flags=ALL_FLAGS, machine=X86, environ=env) is None


# -- environment_ceiling ----------------------------------------------------------------------


def test_no_caps_no_ceiling():
    assert environment_ceiling({}) is None
    assert environment_ceiling({"PATH": "/bin"}) is None


def test_ceiling_picks_the_lowest_cap():
    env = {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX512_E4"}
    assert environment_ceiling(env) == (2, "ONEDNN_MAX_CPU_ISA=avx2")
    env = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    assert environment_ceiling(env) == (1, "MKL_ENABLE_INSTRUCTIONS=SSE4_2")
    assert environment_ceiling({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}) == (5, "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI")


def test_ceiling_reads_os_environ_by_default(monkeypatch):
    for knob in KNOBS:
        monkeypatch.delenv(knob, raising=False)
    assert environment_ceiling() is None
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    assert environment_ceiling() == (2, "MKL_ENABLE_INSTRUCTIONS=AVX2")


@pytest.mark.parametrize("name", list(LEVELS))
def test_a_level_own_environment_allows_itself_and_refuses_wider(name):
    """The caps a level sets, read back as the environment, allow that level and refuse the
    next wider one (an operator running a worker's own environment by hand)."""
    env = environment_for(name)
    rank = LEVELS[name].rank
    ceiling = environment_ceiling(env)
    assert ceiling is not None and ceiling[0] >= rank
    assert unavailable(name, flags=ALL_FLAGS, machine=X86, environ=env) is None
    wider = [n for n, lv in LEVELS.items() if lv.rank == rank + 1]
    for w in wider:
        assert unavailable(w, flags=ALL_FLAGS, machine=X86, environ=env) is not None, (name, w)


# -- environment_for / apply ------------------------------------------------------------------


def test_native_environment_is_empty():
    assert environment_for(NATIVE) == {}


@pytest.mark.parametrize("name", list(LEVELS))
def test_levels_set_exactly_the_three_knobs(name):
    env = environment_for(name)
    assert tuple(sorted(env)) == tuple(sorted(KNOBS))
    level = LEVELS[name]
    assert env == {
        "ATEN_CPU_CAPABILITY": level.aten,
        "ONEDNN_MAX_CPU_ISA": level.onednn,
        "MKL_ENABLE_INSTRUCTIONS": level.mkl,
    }


def test_avx2_environment_values():
    assert environment_for("avx2") == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    }
    assert environment_for("scalar")["ATEN_CPU_CAPABILITY"] == "default"


def _unset(monkeypatch, *names: str) -> None:
    """Remove variables so that monkeypatch restores them afterwards, absent ones included
    (``delenv(raising=False)`` records nothing for an absent variable, so what ``apply`` then
    sets would leak into every later test: a native run would silently get AVX2 kernels)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_apply_sets_knobs_and_harness_isa(monkeypatch):
    _unset(monkeypatch, *KNOBS, "HARNESS_ISA")
    values = apply("avx2")
    assert values == environment_for("avx2")
    for k, v in values.items():
        assert os.environ[k] == v
    assert os.environ["HARNESS_ISA"] == "avx2"


def test_apply_native_leaves_the_knobs(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # the operator's own cap stays
    _unset(monkeypatch, "ONEDNN_MAX_CPU_ISA", "HARNESS_ISA")
    assert apply(NATIVE) == {}
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
    assert os.environ["HARNESS_ISA"] == NATIVE


def test_apply_unknown_changes_nothing(monkeypatch):
    _unset(monkeypatch, "HARNESS_ISA")
    with pytest.raises(IsaError):
        apply("avx9")
    assert "HARNESS_ISA" not in os.environ


# -- oneDNN family / kernel class -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, family",
    [
        ("Intel AVX10.1 and Intel AMX with bfloat16 and 8-bit integer support", "amx"),
        (
            "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit "
            "integer support",
            "amx",
        ),
        ("Intel AVX-512 with Intel DL Boost and bfloat16 support", "avx512_bf16"),
        ("Intel AVX-512 with Intel DL Boost", "avx512_vnni"),
        ("Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions", "avx512"),
        ("Intel AVX2 with Intel DL Boost", "avx2_vnni"),
        ("Intel AVX2", "avx2"),
        ("Intel AVX", "avx"),
        ("Intel SSE4.1", "sse41"),
        ("Intel 64", "other"),
    ],
)
def test_onednn_family_of_real_verbose_strings(text, family):
    assert onednn_family(text) == family


@pytest.mark.parametrize("text", [None, ""])
def test_onednn_family_of_nothing_is_none(text):
    assert onednn_family(text) is None


def test_onednn_family_avx2_vnni_2_is_not_avx512():
    # oneDNN cpu_isa_traits.hpp: avx2_vnni_2 -> this text (ONEDNN_MAX_CPU_ISA=AVX2_VNNI_2, which
    # _ONEDNN_RANK knows): an AVX2 machine, whatever its family name, is no AVX-512 one
    text = "Intel AVX2 with Intel DL Boost, float16 and bfloat16 support (preview support)"
    assert onednn_family(text) == "avx2_vnni_2"
    assert onednn_family("Intel AVX10.2") == "avx10"  # oneDNN writes AVX10 with no space


def test_kernel_class():
    assert kernel_class("AVX512", "Intel AVX2") == "aten-avx512/onednn-avx2"
    assert kernel_class("avx2", "Intel AVX-512 with Intel DL Boost") == "aten-avx2/onednn-avx512_vnni"
    assert kernel_class(None, None) == "aten-unknown/onednn-unknown"
    assert kernel_class("DEFAULT", "") == "aten-default/onednn-unknown"


@given(st.text(max_size=80))
def test_onednn_family_is_total(text):
    family = onednn_family(text)
    known = {f for _, f in isa._ONEDNN_FAMILIES} | {"other"}
    assert (family is None) == (text == "")
    assert family is None or family in known


# -- properties -------------------------------------------------------------------------------


@given(name=st.sampled_from(list(LEVELS)), extra=st.sets(st.sampled_from(KERNEL_FLAGS)))
def test_every_flag_set_with_the_needs_gives_the_level(name, extra):
    flags = frozenset(LEVELS[name].needs) | frozenset(extra)
    assert unavailable(name, flags=flags, machine=X86, environ={}) is None


@given(name=st.sampled_from(list(LEVELS)), flags=st.sets(st.sampled_from(KERNEL_FLAGS)))
def test_unavailable_iff_a_need_is_missing(name, flags):
    why = unavailable(name, flags=frozenset(flags), machine=X86, environ={})
    missing = [f for f in LEVELS[name].needs if f not in flags]
    assert (why is None) == (not missing)
    if why:
        assert all(f in why for f in missing)


@given(
    name=st.sampled_from(list(LEVELS)),
    aten=st.sampled_from([None, "default", "avx2", "avx512"]),
    onednn=st.sampled_from([None, "SSE41", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16"]),
    mkl=st.sampled_from([None, "SSE4_2", "AVX2", "AVX2_E1", "AVX512", "AVX512_E2", "AVX512_E4"]),
)
def test_environment_cap_refuses_exactly_the_wider_levels(name, aten, onednn, mkl):
    env = {k: v for k, v in zip(KNOBS, (aten, onednn, mkl), strict=False) if v is not None}
    why = unavailable(name, flags=ALL_FLAGS, machine=X86, environ=env)
    ceiling = environment_ceiling(env)
    if ceiling is None:
        assert why is None
    else:
        assert (why is None) == (LEVELS[name].rank <= ceiling[0])
        if why:
            assert ceiling[1] in why


@given(st.sets(st.sampled_from(KERNEL_FLAGS)))
def test_available_levels_are_downward_closed_along_needs(flags):
    """If a level is available, so is every level whose needs are a subset of its needs."""
    flags = frozenset(flags)
    ok = {n for n in LEVELS if unavailable(n, flags=flags, machine=X86, environ={}) is None}
    for a in ok:
        for b, lv in LEVELS.items():
            if set(lv.needs) <= set(LEVELS[a].needs):
                assert b in ok


# -- below-native: a level relative to the machine ---------------------------------------------

ZEN4 = frozenset({"sse4_1", "avx", "avx2", "fma", "f16c", *isa._AVX512, "avx512_vnni", "avx512_bf16"})
ZEN3 = frozenset({"sse4_1", "avx", "avx2", "fma", "f16c"})
SAPPHIRE_RAPIDS = ZEN4 | {"avx_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}
AVX2_CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        (ZEN4, {}, "avx2"),  # AVX-512 against AVX2 (Zen 4 has no AVX-VNNI)
        (SAPPHIRE_RAPIDS, {}, "avx2_vnni"),  # the widest AVX2-class level this CPU gives
        (ZEN3, {}, "scalar"),  # an AVX2-only CPU: AVX2 against ATen's default kernels
        (ZEN4, AVX2_CAP, "scalar"),  # a whole run capped to AVX2 stands in for a Zen 3
        (ZEN4, {"ATEN_CPU_CAPABILITY": "default"}, None),  # native already runs the narrowest ATen kernels
        (frozenset({"sse4_1"}), {}, None),
    ],
)
def test_below_native_resolves_to_the_next_narrower_aten_kernels(flags, environ, expected):
    assert isa.resolve(isa.BELOW_NATIVE, flags=flags, machine=X86, environ=environ) == expected
    why = unavailable(isa.BELOW_NATIVE, flags=flags, machine=X86, environ=environ)
    if expected is None:
        assert why is not None and "no kernel level here runs narrower ATen kernels" in why
        assert len(why.splitlines()) == 1
    else:
        assert why is None


def test_below_native_elsewhere_is_refused_with_the_reason():
    why = unavailable(isa.BELOW_NATIVE, flags=ZEN3, machine="aarch64", environ={})
    assert why is not None and "aarch64" in why
    assert isa.resolve(isa.BELOW_NATIVE, flags=ZEN3, machine="aarch64", environ={}) is None


def test_fixed_levels_resolve_to_themselves():
    for name in ISA_NAMES:
        assert isa.resolve(name, flags=frozenset(), machine="aarch64", environ={}) == name


def test_the_axis_takes_fixed_and_relative_names():
    assert isa.BELOW_NATIVE not in ISA_NAMES
    assert isa.ISA_CHOICES[: len(ISA_NAMES)] == ISA_NAMES and isa.ISA_CHOICES[-1] == isa.BELOW_NATIVE
    assert check_name(isa.BELOW_NATIVE) == "below-native"


@given(
    flags=st.sets(st.sampled_from(KERNEL_FLAGS)), cap=st.sampled_from([{}, AVX2_CAP, {"ATEN_CPU_CAPABILITY": "avx2"}])
)
def test_below_native_is_the_widest_available_level_with_narrower_aten(flags, cap):
    flags = frozenset(flags)
    got = isa.resolve(isa.BELOW_NATIVE, flags=flags, machine=X86, environ=cap)
    native = isa.ATEN_ORDER.index(isa.native_aten(flags, cap))
    candidates = [
        n
        for n, lv in LEVELS.items()
        if isa.ATEN_ORDER.index(lv.aten) < native and unavailable(n, flags=flags, machine=X86, environ=cap) is None
    ]
    assert got == (candidates[0] if candidates else None)  # LEVELS is widest first
    if got is not None:
        assert isa.ATEN_ORDER.index(LEVELS[got].aten) < native


def test_apply_below_native_sets_the_resolved_level(monkeypatch):
    monkeypatch.setattr(isa, "cpu_flags", lambda: ZEN3)
    monkeypatch.setattr(isa.platform, "machine", lambda: X86)
    _unset(monkeypatch, *KNOBS, isa.LEVEL_VARIABLE)  # restored afterwards: apply sets them
    assert apply(isa.BELOW_NATIVE) == environment_for("scalar")
    assert os.environ[isa.LEVEL_VARIABLE] == "scalar"  # read back into the records' determinism.kernels.isa


def test_worker_checks_the_level_below_native_became():
    from harness.execution.worker import kernels_refusal

    assert kernels_refusal(isa.BELOW_NATIVE, {"isa": "scalar", "aten": "DEFAULT"}) is None
    why = kernels_refusal(isa.BELOW_NATIVE, {"isa": "avx2", "aten": "AVX512"})
    assert why is not None and "avx2" in why and "AVX512" in why
