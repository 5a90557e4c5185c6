"""The Crynux relay's node-name whitelist (harness.workflows.whitelist): the relay's own GPU-name
normalisation (Go's strings.Fields, not Python's str.split), its version rule, what a node
reports from nvidia-smi, and the entry document (body, curl line, signature). The certify
command end to end is in tests/workflows/test_certify.py (it shares that module's reference run)."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.crossrun import RunSide
from harness.workflows.certify import Certificate, ConfigCertificate, pool_key
from harness.workflows.whitelist import (
    API_PATH,
    DOCUMENT,
    GO_SPACE,
    RELAY_COMMIT,
    Card,
    WhitelistError,
    build_entry,
    curl_line,
    entry_key,
    go_fields,
    normalize_entry,
    normalize_gpu_name,
    normalize_node_version,
    parse_entry,
    parse_nvidia_smi,
    select_cards,
    vram_gb,
)

FAST = settings(max_examples=300, deadline=None)
#: U+001C..U+001F: Python's str.isspace says whitespace, Go's unicode.IsSpace does not
PYTHON_ONLY_SPACE = "\x1c\x1d\x1e\x1f"
go_space = st.sampled_from(sorted(GO_SPACE))
word = st.text(st.characters(codec="utf-8", exclude_characters=GO_SPACE), min_size=1, max_size=12)
plain_word = st.text(
    st.characters(codec="utf-8", exclude_characters=GO_SPACE | set(PYTHON_ONLY_SPACE)), min_size=1, max_size=12
)


# --- the relay's GPU-name normalisation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        # crynux-relay models/gpu_name_test.go, TestNormalizeGPUName
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("  NVIDIA GeForce RTX 4090\t", "NVIDIA GeForce RTX 4090"),
        (" Apple M4\n      Type+Darwin", "Apple M4 Type+Darwin"),
        ("A  B\n\nC", "A B C"),
        (" \n\t ", ""),
        ("", ""),
        # Go's unicode.IsSpace beyond ASCII: NEL, NBSP, ogham, en/em spaces, line separator, ideographic space
        ("NVIDIA\u0085H100\u00a0PCIe", "NVIDIA H100 PCIe"),
        ("A\u1680B\u2003C\u2028D\u3000E\u202fF\u205fG", "A B C D E F G"),
        # not whitespace to Go (str.split() would split on every one of these)
        ("A\x1cB\x1dC\x1eD\x1fE", "A\x1cB\x1dC\x1eD\x1fE"),
        ("A\u200bB", "A\u200bB"),  # zero-width space: not White_Space
        ("A\u180eB", "A\u180eB"),  # Mongolian vowel separator: not White_Space since Unicode 6.3
    ],
)
def test_normalize_gpu_name_cases(raw, expected):
    assert normalize_gpu_name(raw) == expected


def test_python_split_differs_from_go_on_exactly_four_characters():
    """Every code point: Go's IsSpace set is Python's isspace set minus U+001C..U+001F."""
    python_space = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert python_space - GO_SPACE == set(PYTHON_ONLY_SPACE) and not GO_SPACE - python_space
    assert ["A", "B"] == ["A", "B"] and go_fields("A\x1cB") == ["A\x1cB"]


@FAST
@given(st.text())
def test_normalize_is_idempotent_and_canonical(text):
    once = normalize_gpu_name(text)
    assert normalize_gpu_name(once) == once
    assert once == once.strip(" ") and "  " not in once
    assert not any(ch in GO_SPACE and ch != " " for ch in once)  # only single ASCII spaces remain


@FAST
@given(
    st.lists(word, max_size=6),
    st.lists(st.lists(go_space, min_size=1, max_size=4), min_size=6, max_size=6),
    st.lists(go_space, max_size=3),
    st.lists(go_space, max_size=3),
)
def test_normalize_matches_go_fields(words, gaps, lead, trail):
    """Words (no Go whitespace inside; Python-only whitespace allowed) separated by runs of any
    Go whitespace, padded by more: they come back joined by one space (strings.Fields)."""
    inner = "".join(w + ("".join(gaps[i]) if i < len(words) - 1 else "") for i, w in enumerate(words))
    text = "".join(lead) + inner + "".join(trail)
    assert go_fields(text) == words
    assert normalize_gpu_name(text) == " ".join(words)


@FAST
@given(st.lists(plain_word, min_size=2, max_size=4), st.sampled_from(PYTHON_ONLY_SPACE))
def test_python_only_whitespace_is_kept(words, sep):
    """Joined by U+001C..U+001F the words stay one field, as in Go; Python's split would part them."""
    text = sep.join(words)
    assert normalize_gpu_name(text) == text and text.split() == words


# --- the relay's version rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2.6.0", "2.6.0"),
        (" 02.06.000\n", "2.6.0"),
        ("0.0.0", "0.0.0"),
        ("18446744073709551615.0.1", "18446744073709551615.0.1"),  # uint64 max
    ],
)
def test_node_version(raw, expected):
    assert normalize_node_version(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "2.6",
        "2.6.0.1",
        "v2.6.0",
        "+2.6.0",
        "2.-6.0",
        "2.6.0-rc1",
        "2..0",
        "2_0.6.0",
        " 2 .6.0",
        "\u0662.6.0",  # ARABIC-INDIC DIGIT TWO: str.isdigit() says yes, Go's ParseUint no
        "18446744073709551616.0.0",  # uint64 max + 1
        "\x1c2.6.0",  # not trimmed by Go's TrimSpace
    ],
)
def test_node_version_refused(raw):
    with pytest.raises(ValueError, match="node version"):
        normalize_node_version(raw)


@FAST
@given(
    st.tuples(*[st.integers(min_value=0, max_value=2**64 - 1)] * 3),
    st.tuples(*[st.integers(0, 3)] * 3),
    st.lists(go_space, max_size=3),
    st.lists(go_space, max_size=3),
)
def test_node_version_is_major_minor_patch(numbers, zeros, left, right):
    raw = "".join(left) + ".".join("0" * z + str(n) for z, n in zip(zeros, numbers, strict=False)) + "".join(right)
    expected = "{}.{}.{}".format(*numbers)  # the relay's BuildNodeVersion
    if len(expected) > 32:
        with pytest.raises(ValueError, match="32-character"):
            normalize_node_version(raw)
    else:
        assert normalize_node_version(raw) == expected == normalize_node_version(expected)


def test_normalize_entry():
    entry = normalize_entry("  NVIDIA   H100 80GB HBM3+docker ", 80, "2.6.0")
    assert entry == {"gpu_name": "NVIDIA H100 80GB HBM3+docker", "gpu_vram": 80, "node_version": "2.6.0"}
    assert entry_key(entry) == "NVIDIA H100 80GB HBM3+docker|80|2.6.0"  # service.BuildNodeNameKey
    for bad, why in (
        ((" \t", 80, "2.6.0"), "empty"),
        (("A", 0, "2.6.0"), "positive"),
        (("A", True, "2.6.0"), "positive"),
        (("A" * 192, 8, "2.6.0"), "191"),
        (("A", 8, "2.6"), "node version"),
    ):
        with pytest.raises(ValueError, match=why):
            normalize_entry(*bad)


# --- what a node reports ---------------------------------------------------------------------------

HEADER = "index, uuid, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB]"


def smi(*cards: tuple[str, int]) -> str:
    return "\n".join(
        [HEADER, *(f"{i}, GPU-{i:08x}, {name}, 5 %, 100 MiB, {mib} MiB" for i, (name, mib) in enumerate(cards))]
    )


def test_nvidia_smi_and_the_nodes_choice_of_cards():
    cards = parse_nvidia_smi(
        smi(("NVIDIA GeForce RTX 3060", 12288), ("NVIDIA GeForce RTX 4090", 24564), ("NVIDIA GeForce RTX 4090", 24564))
    )
    assert cards[0] == Card(0, "NVIDIA GeForce RTX 3060", 12288) and len(cards) == 3
    assert [c.index for c in select_cards(cards)] == [1, 2]  # the largest group of one name
    tie = parse_nvidia_smi(smi(("NVIDIA GeForce RTX 4090", 24564), ("NVIDIA GeForce RTX 5090", 32607)))
    assert select_cards(tie)[0].name == "NVIDIA GeForce RTX 5090"  # then the larger memory
    same = parse_nvidia_smi(smi(("NVIDIA A10", 23028), ("NVIDIA A10G", 23028)))
    assert select_cards(same)[0].name == "NVIDIA A10"  # then the lowest index
    assert vram_gb(24564) == 24 and vram_gb(15360) == 15 and vram_gb(143771) == 141 and vram_gb(1) == 1
    with pytest.raises(ValueError, match="6 fields"):
        parse_nvidia_smi(HEADER + "\n0, GPU-0, A, 5 %")


# --- the entry document ------------------------------------------------------------------------------

GPU_ENV = {
    "processor": "Some CPU",
    "gpu_names": ["NVIDIA  GeForce RTX 4090"],
    "gpu_memory_bytes": [25_393_692_672],
    "os": "Linux-6.8-x86_64",
}


def certificate(
    env=None,
    verdicts=(
        ("gpt/float32/qnone/cuda0/pon", "pass"),
        ("musicgen/float32/qnone/cuda0/pon", "pass_with_tolerance"),
        ("musicgen/bfloat16/qnone/cuda0/pon", "fail"),
    ),
    **kw,
) -> Certificate:
    side = {"label": "x", "source": "s", "run_id": "r", "matrix": "m"}
    configs = [
        ConfigCertificate(
            config_id=cid,
            task=cid.split("/")[0],
            kind="gpt",
            model="tiny:gpt2",
            verdict=v,
            reason=f"{v} because",
            network_rule="result_hash",
            network_label="the network's",
        )
        for cid, v in verdicts
    ]
    return Certificate(
        harness_version="0",
        created_at=0.0,
        passed=False,
        summary="NOT CERTIFIED (bitwise): ...",
        reference=RunSide(**side),
        candidate=RunSide(**{**side, "environment": env or GPU_ENV}),
        match="spec",
        thresholds={},
        configs=configs,
        **kw,
    )


def test_entry_from_nvidia_smi():
    cards = parse_nvidia_smi(smi(("NVIDIA GeForce RTX 4090", 24564)))
    doc = build_entry(certificate(), "ab" * 32, "02.6.0", platform="docker", cards=cards)
    assert doc["document"] == DOCUMENT and doc["relay"]["commit"] == RELAY_COMMIT
    assert doc["entries"] == [{"gpu_name": "NVIDIA GeForce RTX 4090+docker", "gpu_vram": 24, "node_version": "2.6.0"}]
    assert doc["key"] == "NVIDIA GeForce RTX 4090+docker|24|2.6.0"
    assert [c["config_id"] for c in doc["covers"]] == [
        "gpt/float32/qnone/cuda0/pon",
        "musicgen/float32/qnone/cuda0/pon",
    ]
    assert [(c["config_id"], c["why"]) for c in doc["not_covered"]] == [
        ("musicgen/bfloat16/qnone/cuda0/pon", "fail because")
    ]
    assert doc["hardware"]["source"].startswith("nvidia-smi") and doc["hardware"]["vram_mib"] == 24564
    assert doc["certificate"]["sha256"] == "ab" * 32 and doc["certificate"]["signed_by"] == "unsigned"
    # the curl line a maintainer runs posts exactly the entry
    (line,) = doc["curl"]
    argv = shlex.split(line)
    assert argv[:4] == ["curl", "-fsS", "-X", "POST"] and argv[4].endswith(f"{API_PATH}?auth=${{RELAY_ADMIN_TOKEN:?}}")
    assert json.loads(argv[argv.index("--data-binary") + 1]) == doc["entries"][0]
    assert parse_entry(json.loads(json.dumps(doc)), "entry") == json.loads(json.dumps(doc))


def test_entry_from_cuda_when_there_is_no_nvidia_smi():
    doc = build_entry(certificate(), "0" * 64, "2.6.0", platform="Linux", cards=None)
    # 25,393,692,672 bytes = 24,217 MiB -> 24 GB as the node rounds; the source says how it was read
    assert doc["entries"][0] == {"gpu_name": "NVIDIA GeForce RTX 4090+Linux", "gpu_vram": 24, "node_version": "2.6.0"}
    assert "nvidia-smi not found" in doc["hardware"]["source"] and "nvidia-smi not found" in doc["notes"][1]


@pytest.mark.parametrize(
    "cert_kw, cards, why",
    [
        ({"env": {"processor": "Intel Xeon", "gpu_names": []}}, None, "the candidate ran on no GPU (Intel Xeon)"),
        (
            {"verdicts": (("gpt/float32/qnone/cuda0/pon", "fail"),)},
            None,
            "no configuration passed on the GPU (1 certified; first: gpt/float32/qnone/cuda0/pon: fail",
        ),
        ({"verdicts": (("gpt/float32/qnone/cpu/pon", "pass"),)}, None, "ran on cpu, not on the GPU"),
        (
            {},
            [Card(0, "NVIDIA GeForce RTX 4090", 24564), Card(1, "NVIDIA GeForce RTX 4090", 24564)],
            "2 NVIDIA GeForce RTX 4090 cards: its node reports '2x NVIDIA GeForce RTX 4090'",
        ),
        ({}, [Card(0, "NVIDIA A10", 23028)], "nvidia-smi names this machine's GPU 'NVIDIA A10'"),
        ({"env": {**GPU_ENV, "gpu_names": ["NVIDIA A10", "NVIDIA A100"]}}, None, "GPUs of 2 models"),
        ({"emulation": {"threads": 2, "note": "n"}}, None, "emulation"),
        ({"problems": ["candidate evidence: artifact changed"]}, None, "evidence is incomplete or broken"),
    ],
)
def test_entry_refused(cert_kw, cards, why):
    with pytest.raises(WhitelistError, match=None) as err:
        build_entry(certificate(**cert_kw), "0" * 64, "2.6.0", platform="Linux", cards=cards)
    assert why in str(err.value) and "\n" not in str(err.value)


def test_parse_entry_refuses_edits():
    doc = build_entry(certificate(), "0" * 64, "2.6.0", platform="Linux")
    for edit, why in (
        (lambda d: d.update(document="other"), "not a whitelist entry"),
        (lambda d: d.update(entries=[]), "without entries"),
        (lambda d: d["entries"][0].update(gpu_vram=0), "positive"),
        (lambda d: d["entries"][0].update(gpu_name="A  B"), "normalised form"),
        (lambda d: d["entries"][0].update(extra=1), "body"),
    ):
        changed = json.loads(json.dumps(doc))
        edit(changed)
        with pytest.raises(WhitelistError, match=why):
            parse_entry(changed, "entry")


def test_curl_line_quotes_any_name():
    entry = {"gpu_name": 'Bob\'s "GPU" $(rm -rf /)+Linux', "gpu_vram": 8, "node_version": "1.0.0"}
    argv = shlex.split(curl_line(entry))
    assert json.loads(argv[-1]) == entry  # the shell passes the body through unchanged


def test_pool_key_uses_the_relays_normalisation():
    key = pool_key({**GPU_ENV, "gpu_names": [" NVIDIA\tGeForce  RTX 4090\n"]}, "float32", None)
    assert key["gpu_model"] == "NVIDIA GeForce RTX 4090" and key["vram_bytes"] == GPU_ENV["gpu_memory_bytes"][0]
    cpu = pool_key({"processor": "Intel(R) Xeon(R) CPU  @ 2.20GHz", "gpu_names": []}, "float32", 8)
    assert cpu["gpu_model"] == "cpu: Intel(R) Xeon(R) CPU @ 2.20GHz" and cpu["quantize_bits"] == 8


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    "edit, why",
    [
        (
            lambda d: d.update(curl=[curl_line({**d["entries"][0], "gpu_name": "NVIDIA H100+Linux", "gpu_vram": 80})]),
            "curl: the command does not post the entry",
        ),
        (lambda d: d.update(key="NVIDIA H100+Linux|80|2.6.0"), "key 'NVIDIA H100+Linux|80|2.6.0' is not the entry's"),
        (lambda d: d["hardware"].update(gpu_name="NVIDIA H100", gpu_vram=80), "hardware: 'NVIDIA H100+Linux', 80 GB"),
        (lambda d: d.update(schema_version=True), "schema_version True is not"),
    ],
)
def test_verify_checks_what_a_maintainer_runs(capsys, tmp_path, edit, why, signed):
    """Issue 29 item 3: the entries say RTX 4090 / 24, the curl line or key says H100 / 80: NOT
    VERIFIED, exit 1, signed or not (the signature was made over the edited document)."""
    from harness.cli.main import main
    from harness.workflows.whitelist import write_entry

    doc = json.loads(json.dumps(build_entry(certificate(), "0" * 64, "2.6.0", platform="Linux")))
    edit(doc)
    key = None
    if signed:
        assert main(["keygen", str(tmp_path / "op")]) == 0
        from harness.store.signing import load_private_key

        key = load_private_key(tmp_path / "op.key")
    path = tmp_path / "entry.json"
    write_entry(path, doc, key)
    capsys.readouterr()
    code = main(["verify", str(path)])
    out, err = capsys.readouterr()
    if why.startswith("schema_version"):  # bad input: one line, exit 2
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
    else:
        assert code == 1 and out.startswith("NOT VERIFIED") and why in out, out + err
