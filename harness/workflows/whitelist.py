"""The Crynux relay's node-name whitelist: the entry a maintainer adds for certified hardware.

``harness certify ... --whitelist-entry FILE --node-version X.Y.Z`` writes, for the
configurations that passed on a GPU, the JSON body of the relay's admin API and the curl line a
maintainer runs, signed when the certificate is. What the relay admits, read from
crynux-network/crynux-relay at 24ffc26b93046cf4ac5f8461e16ea4f351d4289e:

- ``api/v2/routes.go``: ``POST /v2/admin/node_name_whitelist`` (and ``GET``, ``DELETE
  /v2/admin/node_name_whitelist/:gpu_name/:gpu_vram/:node_version``), behind
  ``api/v2/middleware/admin_auth.go``: the query parameter ``auth`` must equal the relay's
  ``admin.auth_token``;
- ``api/v2/admin/node_name_whitelist.go``: the body ``{"gpu_name": string, "gpu_vram": uint64,
  "node_version": string}``, every field ``validate:"required"`` (so ``gpu_vram`` > 0);
- ``service/node_name_policy.go`` ``NormalizeNodeNameEntry``: the GPU name through
  ``models.NormalizeGPUName`` (refused when empty), the version ``strings.TrimSpace``-ed, split
  on ``.`` into exactly three ``strconv.ParseUint(part, 10, 64)`` parts and rebuilt as
  ``%d.%d.%d`` (``02.1.0`` is ``2.1.0``), the VRAM kept as given; an entry is the exact tuple;
- ``models/gpu_name.go``: ``NormalizeGPUName(name) = strings.Join(strings.Fields(name), " ")``,
  where Go's ``strings.Fields`` splits on ``unicode.IsSpace`` (Python's ``str.split()`` also
  splits on U+001C..U+001F, which Go does not: :func:`normalize_gpu_name` matches Go);
- ``models/node_name_whitelist.go``: ``gpu_name`` a column of 191 characters, ``node_version`` 32;
- ``config/app_config.go``: ``task.node_name_whitelist_enabled`` and
  ``task.minimum_node_name_number`` (``config/config.example.yml``: false and 10);
  ``service/select_nodes.go`` ``filterNodesByNodeNamePolicy`` and ``service/task_matching.go``
  ``filterIndexEntriesByNodeNamePolicy``: with the whitelist enabled only whitelisted tuples are
  selected, and with a minimum N > 0 a tuple is selected only while N active nodes report it;
- ``docs/loaded_models.md``: ``gpu_vram`` is in GB, as recorded at node join.

What a node reports for its hardware, read from crynux-network/crynux-node at
7161161941f9137840161a7a4df7e9eaa032baec: ``src/crynux_server/utils.py`` runs ``nvidia-smi
--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total --format=csv``, keeps the
largest group of cards with one name (ties: the larger per-card memory, then the lowest index),
names it ``NAME`` or ``Nx NAME`` and sums its MiB (appending `` TP`` when it runs tensor parallel);
``src/crynux_server/run.py`` sends ``gpu_vram = ceil(MiB / 1024)``;
``src/crynux_server/node_manager/node_manager.py`` joins with ``gpu_name = NAME + "+" + platform``
(``utils.get_platform``: ``docker`` inside a container, else ``platform.system()``). The entry is
computed the same way, from this machine's ``nvidia-smi`` when it has one (else from CUDA's
figures, and says so), and only for one card: a node with several reports ``Nx NAME`` and may
run tensor parallel, which no cell on one device certifies.
"""

from __future__ import annotations

import json
import math
import os
import platform as platform_module
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis.certificate import Certificate
from harness.errors import WorkflowError
from harness.vocabulary import CERTIFICATE_PASSED

RELAY_REPO = "crynux-network/crynux-relay"
RELAY_COMMIT = "24ffc26b93046cf4ac5f8461e16ea4f351d4289e"
NODE_REPO = "crynux-network/crynux-node"
NODE_COMMIT = "7161161941f9137840161a7a4df7e9eaa032baec"
RELAY_FILES = (
    "api/v2/routes.go",
    "api/v2/admin/node_name_whitelist.go",
    "api/v2/middleware/admin_auth.go",
    "service/node_name_policy.go",
    "models/gpu_name.go",
    "models/node_name_whitelist.go",
    "config/app_config.go",
    "service/select_nodes.go",
    "service/task_matching.go",
)
API_PATH = "/v2/admin/node_name_whitelist"
DOCUMENT = "crynux-relay node-name whitelist entry"
SCHEMA_VERSION = 1
GPU_NAME_MAX = 191  # models/node_name_whitelist.go: size:191
NODE_VERSION_MAX = 32  # size:32
UINT64_MAX = 2**64 - 1
PLATFORMS = ("docker", "Linux", "Windows", "Darwin")
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total",
    "--format=csv",
]

#: Go's unicode.IsSpace: '\t' '\n' '\v' '\f' '\r' ' ' U+0085 U+00A0 in Latin-1, then Unicode's
#: White_Space (src/unicode/graphic.go, tables.go). Python's str.isspace adds U+001C..U+001F.
GO_SPACE = frozenset(
    map(
        chr,
        [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
    )
)


class WhitelistError(WorkflowError):
    """No entry can be written; one line saying why."""


class WhitelistMismatch(WhitelistError):
    """An entry document whose derived fields (the curl line a maintainer runs, the relay's key,
    the hardware it was computed from) do not say what its ``entries`` say: ``NOT VERIFIED``."""


def go_fields(text: str) -> list[str]:
    """Go's ``strings.Fields``: the runs of characters between runs of ``unicode.IsSpace``."""
    fields: list[str] = []
    current: list[str] = []
    for ch in text:
        if ch in GO_SPACE:
            if current:
                fields.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        fields.append("".join(current))
    return fields


def normalize_gpu_name(name: str) -> str:
    """The relay's ``models.NormalizeGPUName``: outer whitespace trimmed, every inner run of
    whitespace one space (Go's definition of whitespace, not Python's)."""
    return " ".join(go_fields(name))


def _go_trim_space(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in GO_SPACE:
        start += 1
    while end > start and text[end - 1] in GO_SPACE:
        end -= 1
    return text[start:end]


_UINT = re.compile(r"[0-9]+")  # ParseUint(s, 10, 64): ASCII digits, no sign, no underscore


def normalize_node_version(text: str) -> str:
    """The relay's version rule: trimmed, exactly three ``.``-separated unsigned 64-bit decimal
    numbers, rebuilt without leading zeros. ValueError when the relay would refuse it."""
    parts = _go_trim_space(str(text)).split(".")
    if len(parts) != 3 or not all(_UINT.fullmatch(p) and int(p) <= UINT64_MAX for p in parts):
        raise ValueError(
            f"node version {text!r}: expected MAJOR.MINOR.PATCH (three decimal numbers), as the relay "
            f"parses it (service/node_name_policy.go ParseNodeVersion)"
        )
    version = ".".join(str(int(p)) for p in parts)
    if len(version) > NODE_VERSION_MAX:
        raise ValueError(f"node version {text!r}: longer than the relay's {NODE_VERSION_MAX}-character column")
    return version


def normalize_entry(gpu_name: str, gpu_vram: int, node_version: str) -> dict[str, Any]:
    """The body the relay stores for these fields (``NormalizeNodeNameEntry``), or ValueError
    for what it would refuse (an empty name, VRAM 0, a bad version) or could not store."""
    name = normalize_gpu_name(gpu_name)
    if not name:
        raise ValueError(f"gpu name {gpu_name!r} is empty once normalised (the relay refuses it)")
    if len(name) > GPU_NAME_MAX:
        raise ValueError(f"gpu name {name!r} is longer than the relay's {GPU_NAME_MAX}-character column")
    if isinstance(gpu_vram, bool) or not isinstance(gpu_vram, int) or not 0 < gpu_vram <= UINT64_MAX:
        raise ValueError(f"gpu_vram {gpu_vram!r}: the relay needs a positive whole number of GB")
    return {"gpu_name": name, "gpu_vram": gpu_vram, "node_version": normalize_node_version(node_version)}


def entry_key(entry: dict[str, Any]) -> str:
    """The relay's ``BuildNodeNameKey``: ``gpu_name|gpu_vram|node_version``."""
    return f"{entry['gpu_name']}|{entry['gpu_vram']}|{entry['node_version']}"


# --- what the node would report ------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    index: int
    name: str
    vram_mib: int


def parse_nvidia_smi(output: str) -> list[Card]:
    """Cards from the node's nvidia-smi query (crynux-node ``parse_nvidia_smi_gpus``: the header
    line skipped, fields split on commas, the first number of the memory fields)."""
    cards = []
    for line in output.strip().splitlines()[1:]:
        if not line.strip():
            continue
        fields = [f.strip() for f in line.strip().split(",")]
        if len(fields) != 6:
            raise ValueError(f"nvidia-smi line {line.strip()!r}: expected 6 fields")
        total = re.search(r"(\d+)", fields[5])
        cards.append(Card(index=int(fields[0]), name=fields[2], vram_mib=int(total.group(1)) if total else 0))
    return cards


def nvidia_smi_cards() -> list[Card] | None:
    """This machine's cards as its node would read them; None without a working nvidia-smi."""
    try:
        done = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    try:
        return parse_nvidia_smi(done.stdout) or None
    except ValueError:
        return None


def select_cards(cards: list[Card]) -> list[Card]:
    """The node's ``select_gpu_cards``: the largest group of one name; ties go to the larger
    per-card memory, then to the group holding the lowest index."""
    groups: dict[str, list[Card]] = {}
    for card in cards:
        groups.setdefault(card.name, []).append(card)
    return max(groups.values(), key=lambda g: (len(g), max(c.vram_mib for c in g), -min(c.index for c in g)))


def in_container() -> bool:
    """crynux-node ``utils.is_running_in_docker``."""
    if os.path.exists("/.dockerenv"):
        return True
    try:
        with open("/proc/self/cgroup") as fh:
            if any("docker" in line for line in fh):
                return True
    except OSError:
        pass
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def node_platform() -> str:
    """crynux-node ``utils.get_platform``: ``docker`` in a container, else ``platform.system()``."""
    return "docker" if in_container() else platform_module.system()


def vram_gb(mib: int) -> int:
    """crynux-node ``run.py``: ``math.ceil(vram_total_mb / 1024)``."""
    return math.ceil(mib / 1024)


def _require_gpu(environment: dict[str, Any]) -> list[str]:
    names = [str(n) for n in environment.get("gpu_names") or []]
    if not names:
        raise WhitelistError(
            f"the candidate ran on no GPU ({environment.get('processor') or 'a CPU'}): the relay "
            f"whitelists GPU nodes (gpu_name, gpu_vram, node_version)"
        )
    return names


def node_hardware(environment: dict[str, Any], cards: list[Card] | None) -> dict[str, Any]:
    """The GPU name and VRAM this machine's node would report, checked against the GPUs the
    certificate's candidate ran on; WhitelistError (one line) when there is no such single GPU."""
    names = _require_gpu(environment)
    models = sorted({normalize_gpu_name(n) for n in names})
    if len(models) > 1:
        raise WhitelistError(
            f"the candidate machine has GPUs of {len(models)} models ({', '.join(models)}): a node "
            f"reports one; certify on a machine with one GPU"
        )
    if cards:
        chosen = select_cards(cards)
        name = chosen[0].name
        if normalize_gpu_name(name) != models[0]:
            raise WhitelistError(
                f"nvidia-smi names this machine's GPU {name!r}, the certificate's candidate ran on "
                f"{models[0]!r}: write the entry on the machine that was certified"
            )
        count, mib, source = len(chosen), sum(c.vram_mib for c in chosen), "nvidia-smi (as the node reads it)"
    else:
        memory = environment.get("gpu_memory_bytes") or []
        if not memory:
            raise WhitelistError("the candidate's environment records no GPU memory, and nvidia-smi is not here")
        name, count, mib = names[0], len(names), int(memory[0]) // 2**20
        mib *= count
        source = (
            "CUDA's total memory (nvidia-smi not found here; the node reads nvidia-smi memory.total, which "
            "can be a few hundred MiB larger: check the node's reported gpu_vram)"
        )
    if count > 1:
        raise WhitelistError(
            f"this machine has {count} {name} cards: its node reports '{count}x {name}' (and may run "
            f"tensor parallel), which cells on one device do not certify"
        )
    return {"gpu_name": name, "cards": count, "vram_mib": mib, "gpu_vram": vram_gb(mib), "source": source}


# --- the entry document ----------------------------------------------------------------------------


def _device_of(config_id: str) -> str | None:
    return next((p for p in config_id.split("/")[1:] if p == "cpu" or p.startswith("cuda")), None)


def covered_configs(cert: Certificate) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(configurations the entry stands on: passed, on a GPU; the others with the reason)."""
    covers, others = [], []
    for c in cert.configs:
        device = _device_of(c.config_id)
        item = {
            "config_id": c.config_id,
            "verdict": c.verdict,
            "network_rule": c.network_rule,
            "network_label": c.network_label,
        }
        if c.verdict not in CERTIFICATE_PASSED:
            others.append({**item, "why": c.reason})
        elif not (device or "").startswith("cuda"):
            others.append({**item, "why": f"ran on {device or 'an unknown device'}, not on the GPU"})
        else:
            covers.append(item)
    return covers, others


def curl_line(entry: dict[str, Any]) -> str:
    """The command a maintainer runs: the relay's address and admin token from the environment."""
    body = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
    return (
        f'curl -fsS -X POST "${{RELAY_URL:?}}{API_PATH}?auth=${{RELAY_ADMIN_TOKEN:?}}" '
        f"-H 'Content-Type: application/json' --data-binary {shlex.quote(body)}"
    )


def build_entry(
    cert: Certificate,
    certificate_sha256: str,
    node_version: str,
    *,
    platform: str | None = None,
    cards: list[Card] | None = None,
    signed_by: str = "unsigned",
) -> dict[str, Any]:
    """The whitelist entry document for ``cert``; WhitelistError (one line) when none can be made."""
    from harness import __version__

    if cert.emulation:
        raise WhitelistError(
            "the certificate is an emulation (the same machine with other settings): it certifies "
            "no hardware for the relay"
        )
    if any(p.startswith("candidate evidence: ") for p in cert.problems):
        raise WhitelistError("the candidate's evidence is incomplete or broken: nothing is certified")
    _require_gpu(cert.candidate.environment)
    covers, others = covered_configs(cert)
    if not covers:
        first = f"; first: {others[0]['config_id']}: {others[0]['verdict']} ({others[0]['why']})" if others else ""
        raise WhitelistError(f"no configuration passed on the GPU ({len(cert.configs)} certified{first})")
    hardware = node_hardware(cert.candidate.environment, cards)
    chosen_platform = platform or node_platform()
    if chosen_platform not in PLATFORMS:
        raise WhitelistError(f"node platform {chosen_platform!r}: expected one of {', '.join(PLATFORMS)}")
    try:
        entry = normalize_entry(f"{hardware['gpu_name']}+{chosen_platform}", hardware["gpu_vram"], node_version)
    except ValueError as err:
        raise WhitelistError(str(err)) from None
    return {
        "document": DOCUMENT,
        "schema_version": SCHEMA_VERSION,
        "harness_version": __version__,
        "created_at": time.time(),
        "relay": {
            "repository": RELAY_REPO,
            "commit": RELAY_COMMIT,
            "files": list(RELAY_FILES),
            "api": f"POST {API_PATH}?auth=<admin.auth_token>",
            "config": {"task.node_name_whitelist_enabled": True},
            "minimum_node_name_number": (
                "task.minimum_node_name_number (config.example.yml: 10): when above 0, "
                "a whitelisted tuple is selected only while that many active nodes "
                "report it"
            ),
        },
        "entries": [entry],
        "curl": [curl_line(entry)],
        "key": entry_key(entry),
        "hardware": {
            **hardware,
            "platform": chosen_platform,
            "platform_source": "--node-platform" if platform else "detected as the node detects it",
            "node": f"{NODE_REPO}@{NODE_COMMIT}",
        },
        "covers": covers,
        "not_covered": others,
        "certificate": {
            "sha256": certificate_sha256,
            "summary": cert.summary,
            "signed_by": signed_by,
            "candidate_run": cert.candidate.run_id,
            "reference_run": cert.reference.run_id,
            "reference_bundle_sha256": cert.reference.bundle_sha256,
            "reference_signed_by": cert.reference_signed_by,
        },
        "notes": [
            "the node version is the node's own (its worker's x.y.z, stated with --node-version), not the "
            "harness's; the tuple must match exactly what the node reports (GET /v1/node/<address>)",
            f"gpu_vram is GB as the node computes it: ceil({hardware['vram_mib']} MiB / 1024) = "
            f"{hardware['gpu_vram']}, from {hardware['source']}",
        ],
    }


def parse_entry(doc: Any, where: str) -> dict[str, Any]:
    """A whitelist entry document as ``harness verify`` reads it (its signature aside)."""
    if not isinstance(doc, dict) or doc.get("document") != DOCUMENT:
        raise WhitelistError(f"{where}: not a whitelist entry")
    version = doc.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # ``true`` is not version 1
        raise WhitelistError(
            f"{where}: whitelist entry schema_version {doc.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    entries = doc.get("entries")
    if not isinstance(entries, list) or not entries:
        raise WhitelistError(f"{where}: a whitelist entry without entries")
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"gpu_name", "gpu_vram", "node_version"}:
            raise WhitelistError(f"{where}: an entry is not a {{gpu_name, gpu_vram, node_version}} body")
        try:
            again = normalize_entry(entry["gpu_name"], entry["gpu_vram"], entry["node_version"])
        except (ValueError, TypeError) as err:
            raise WhitelistError(f"{where}: {err}") from None
        if again != entry:
            raise WhitelistError(f"{where}: entry {entry_key(entry)!r} is not in the relay's normalised form")
    _check_derived(doc, entries, where)
    return doc


def _check_derived(doc: dict[str, Any], entries: list[dict[str, Any]], where: str) -> None:
    """What a maintainer runs is rebuilt from ``entries`` and must be what the document holds:
    a signature over an entry whose curl line posts another GPU would otherwise vouch for it."""
    if len(entries) != 1:
        raise WhitelistError(f"{where}: a whitelist entry document holds one entry, got {len(entries)}")
    entry = entries[0]
    if doc.get("curl") != [curl_line(entry)]:
        raise WhitelistMismatch(
            f"{where}: curl: the command does not post the entry {entry_key(entry)!r} (rebuild it from the entries)"
        )
    if doc.get("key") != entry_key(entry):
        raise WhitelistMismatch(f"{where}: key {doc.get('key')!r} is not the entry's {entry_key(entry)!r}")
    hardware = doc.get("hardware")
    if isinstance(hardware, dict):
        claimed = f"{hardware.get('gpu_name')}+{hardware.get('platform')}"
        if normalize_gpu_name(claimed) != entry["gpu_name"] or hardware.get("gpu_vram") != entry["gpu_vram"]:
            raise WhitelistMismatch(
                f"{where}: hardware: {claimed!r}, {hardware.get('gpu_vram')!r} GB is not the entry's "
                f"{entry['gpu_name']!r}, {entry['gpu_vram']} GB"
            )


def write_entry(path: Path, doc: dict[str, Any], key: Any = None) -> str:
    """Write the entry document (signed with ``key`` when given); returns the key id or 'unsigned'."""
    from harness.store.run import atomic_write_json
    from harness.store.signing import sign_document

    if key is not None:
        doc = sign_document(doc, key)
    atomic_write_json(Path(path), doc)
    return doc["signature"]["key_id"] if key is not None else "unsigned"
