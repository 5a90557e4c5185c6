"""A real foreign machine: a bundle made with this harness on an AVX2-only AMD EPYC (Zen 3),
certified here natively and at the kernel level that reproduces its kernels (``--isa avx2``).

The bundle lives outside the repository (``shared/reference/bundles`` beside it, or beside the
main checkout of a git worktree, as tests/peer finds the reference runners); the tests skip with
the reason when it is absent. Only four of its twelve cells are re-run (``--matrix``): tiny GPT-2
and tiny MusicGen, float32 and bfloat16, seed 42. What each certificate says was measured on an
AMD EPYC with AVX-512 and AVX512-BF16 (docs/across-cpus.md); the assertions name the kernel
classes they hold for, read back from both sides' records.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from harness.analysis.certificate import Certificate
from harness.isa import unavailable
from harness.spec.matrix import dump_matrix
from harness.workflows.certify import certify
from tests.peer.conftest import REPO, _git_common_parent

BUNDLE = "zen3-avx2-shared"
ZEN3_CLASS = "aten-avx2/onednn-avx2"
#: the machine the figures in docs/across-cpus.md were measured on
MEASURED_CLASS = "aten-avx512/onednn-avx512_bf16"
GPT = ("gpt-chatbot/float32/qnone/cpu/pon", "gpt-chatbot/bfloat16/qnone/cpu/pon")
MUSIC_F32, MUSIC_BF16 = "musicgen-pop/float32/qnone/cpu/pon", "musicgen-pop/bfloat16/qnone/cpu/pon"


def reference_bundles() -> Path | None:
    """``shared/reference/bundles`` beside the repository, else beside the main checkout."""
    explicit = os.environ.get("HARNESS_REFERENCE_BUNDLES")
    candidates = [Path(explicit)] if explicit else [REPO.parent / "shared" / "reference" / "bundles"]
    main = _git_common_parent(REPO)
    if main is not None and not explicit:
        candidates.append(main.parent / "shared" / "reference" / "bundles")
    return next((c for c in candidates if (c / f"{BUNDLE}.zip").is_file()), None)


@pytest.fixture(scope="module")
def zen3(tmp_path_factory) -> tuple[Path, Path]:
    """The bundle and a matrix of four of its cells (the bundle's own matrix, seed 42, no 8-bit)."""
    found = reference_bundles()
    if found is None:
        pytest.skip(
            f"the {BUNDLE} reference bundle is not here (set HARNESS_REFERENCE_BUNDLES or put "
            "shared/reference/bundles beside the repository)"
        )
    doc = tomllib.loads((found / f"{BUNDLE}.toml").read_text())
    tasks = REPO / "matrices"
    doc["tasks"] = [{**t, "file": str(tasks / t["file"])} for t in doc["tasks"]]
    doc["axes"].update(seed=[42], quantize_bits=["none"])
    matrix = tmp_path_factory.mktemp("zen3") / "zen3-subset.toml"
    matrix.write_text(dump_matrix(doc))
    return found / f"{BUNDLE}.zip", matrix


def _certify(zen3: tuple[Path, Path], out: Path, isa: str | None) -> Certificate:
    bundle, matrix = zen3
    cert, _ = certify(bundle, matrix=matrix, out=out, isa=isa)
    assert not cert.problems, cert.problems
    assert sorted(c.config_id for c in cert.configs) == sorted([*GPT, MUSIC_F32, MUSIC_BF16])
    assert cert.reference.environment["kernels"]["class"] == ZEN3_CLASS  # the bundle's own read-back
    return cert


@pytest.mark.slow
def test_certify_natively_against_a_real_zen3(zen3, tmp_path, tiny_gpt2, tiny_musicgen):
    """This machine's own kernels against the Zen 3's: the kernels are among the fields that
    differ; tiny GPT-2 keeps its tokens; MusicGen float32 keeps its codes with other waveform
    floats; MusicGen bfloat16 samples other codes from step 0 under AVX-512 kernels."""
    cert = _certify(zen3, tmp_path / "native", None)
    here = cert.candidate.environment["kernels"]["class"]
    by = {c.config_id: c for c in cert.configs}
    if here == ZEN3_CLASS:  # an AVX2-only machine: the same kernels, so the same bytes
        assert cert.passed and all(c.verdict == "pass" for c in cert.configs)
        return
    assert any(f.startswith("kernels.class ") for f in cert.environment_differs), cert.environment_differs
    assert all(by[g].verdict == "pass" and by[g].levels == {"bitwise": 1} for g in GPT)
    assert not cert.passed and by[MUSIC_BF16].verdict == "fail" and not by[MUSIC_BF16].findings
    if here == MEASURED_CLASS:  # what docs/across-cpus.md reports for this kind of machine
        assert by[MUSIC_F32].levels == {"tokens": 1} and by[MUSIC_F32].verdict == "fail"
        assert by[MUSIC_BF16].levels == {"divergent": 1} and by[MUSIC_BF16].first_divergence == 0


@pytest.mark.slow
def test_certify_at_avx2_reproduces_the_zen3_bit_for_bit(zen3, tmp_path, tiny_gpt2, tiny_musicgen):
    """Capped at the avx2 level, this machine reads back the Zen 3's kernel class and gives its
    bytes in every configuration, bfloat16 MusicGen's waveform included: the emulation is faithful."""
    why = unavailable("avx2")
    if why:
        pytest.skip(why)
    cert = _certify(zen3, tmp_path / "avx2", "avx2")
    assert cert.emulation is not None and cert.emulation["isa"] == "avx2"
    here = cert.candidate.environment["kernels"]
    assert here["class"] == ZEN3_CLASS and not any(f.startswith("kernels.class") for f in cert.environment_differs)
    assert cert.passed, [(c.config_id, c.reason) for c in cert.configs if c.verdict != "pass"]
    assert all(c.levels == {"bitwise": 1} for c in cert.configs)
