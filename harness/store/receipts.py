"""Receipts: one digest per execution record that chains everything that produced its output.

Why a chain: a digest of the outputs alone says nothing about what was run. A receipt binds,
in a fixed order, the task document, every file of every model folder, the runner (harness
version and task kind), the library versions, the determinism flags in force, the device
class, the seed and the output digests. Each link's value is hashed (sha256 of canonical
JSON) and folded into a running sha256, so changing any one value changes the receipt from
that link on, and ``verify_receipt`` can name the *first* link that no longer holds.

Receipt format (``Record.receipt``), version 1:
  ``{"version": 1, "links": {name: sha256(canonical_json(value))}, "digest": hex}``
with ``digest = h_n``, ``h_0 = sha256("consensus-harness receipt v1")`` and
``h_i = sha256(h_{i-1} || name_i || ":" || links[name_i])`` over ``LINKS`` in order.
Gensyn's REE receipts hash model revision, config, prompt and outputs together; this one also
binds the libraries, flags and device class that decide whether floats reproduce.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness.digests import digest_json, sha256_file

RECEIPT_VERSION = 1
LINKS = ("task", "weights", "runner", "libraries", "determinism", "device", "seed", "outputs")
_ROOT = b"consensus-harness receipt v1"


def model_refs(doc: Any) -> list[str]:
    """Every ``model`` string in a task document (a chain names two)."""
    found: list[str] = []

    def visit(d: Any) -> None:
        if isinstance(d, dict):
            if isinstance(d.get("model"), str):
                found.append(d["model"])
            for v in d.values():
                visit(v)
        elif isinstance(d, list):
            for v in d:
                visit(v)

    visit(doc)
    return sorted(set(found))


def folder_digest(folder: Path) -> str:
    """sha256 over every regular file of a model folder (relative path and content sha256),
    so any changed byte of weights, config or tokenizer changes it; links are not followed."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if rel == "tiny-model.json":
            continue  # the cache's own note about the folder, not part of the model
        h.update(f"{rel}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def environment_facts(environment: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(libraries, device class) from an environment fingerprint; stable between the workers
    of one machine (thread counts, which vary by cell, are left to the determinism link)."""
    env = environment or {}
    libraries = {"python": env.get("python"), "torch": env.get("torch"), **(env.get("libraries") or {})}
    device = {
        "processor": env.get("processor"),
        "machine": env.get("machine"),
        "gpu_names": env.get("gpu_names"),
        "cuda_runtime": env.get("cuda_runtime"),
        "cudnn": env.get("cudnn"),
        "driver": env.get("driver"),
    }
    return libraries, device


def link_values(
    record: dict[str, Any],
    task_doc: dict[str, Any],
    harness_version: str | None,
    environment: dict[str, Any] | None,
    output_digests: dict[str, str],
    libraries: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The value of every link for one ok record, from its sources; ``libraries``: the ones
    the record says it ran with (a stack's), else the environment's."""
    own, device_class = environment_facts(environment)
    libraries = own if libraries is None else libraries
    axes = record.get("axes") or {}
    axes = axes.model_dump() if hasattr(axes, "model_dump") else axes
    return {
        "task": {"task_doc": digest_json(task_doc), "spec_hash": record.get("spec_hash")},
        "weights": (record.get("model_meta") or {}).get("model_files_sha256"),
        "runner": {"harness_version": harness_version, "kind": record.get("kind")},
        "libraries": libraries,
        "determinism": record.get("determinism") or {},
        "device": {"device": axes.get("device"), "class": device_class},
        "seed": axes.get("seed"),
        "outputs": dict(sorted(output_digests.items())),
    }


def chain(links: dict[str, str]) -> list[str]:
    """The running digests h_1..h_n over ``LINKS``."""
    h = hashlib.sha256(_ROOT).hexdigest()
    out = []
    for name in LINKS:
        h = hashlib.sha256(f"{h}{name}:{links.get(name, '')}".encode()).hexdigest()
        out.append(h)
    return out


def make_receipt(values: dict[str, Any]) -> dict[str, Any]:
    links = {name: digest_json(values[name]) for name in LINKS}
    return {"version": RECEIPT_VERSION, "links": links, "digest": chain(links)[-1]}


def verify_receipt(receipt: Any, values: dict[str, Any]) -> str | None:
    """None when the receipt holds for ``values`` (recomputed from what is stored), else one
    line naming the first link that does not hold."""
    if not isinstance(receipt, dict) or receipt.get("version") != RECEIPT_VERSION:
        return "no receipt (or an unknown receipt version)"
    links = receipt.get("links")
    if not isinstance(links, dict):
        return "receipt has no links"
    for name in LINKS:
        if links.get(name) != digest_json(values[name]):
            return f"receipt link '{name}' does not hold (its stored value was changed after the run)"
    if receipt.get("digest") != chain(links)[-1]:
        return "receipt digest does not match its links (the chain was edited)"
    return None
