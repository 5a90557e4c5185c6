"""The driver's book of the nodes that ran a run: manifest entries and each record's node.

Why: on a fleet the question is which machine produced which output. A worker's ``ready``
event carries the environment fingerprint it measured on its node (an executor adds who the
node is: Ray node id, hostname, the CPUs and GPUs it has); the first event from a node puts
the node, its fingerprint and its environment class in ``manifest.json`` under ``nodes``, and
every record is stamped with its node. Local runs have one node, this machine. Called only
from the serialised callbacks of harness.execution.schedule, so it needs no lock of its own.
"""

from __future__ import annotations

import platform
from typing import Any

from harness.execution.env import environment_class, node_fields
from harness.execution.protocol import Ready
from harness.store.records import Record
from harness.store.run import RunStore
from harness.vocabulary import CURRENT_STACK


def local_node() -> dict[str, Any]:
    host = platform.node() or "localhost"
    return {"key": host, "hostname": host, "ray_node_id": None}


class NodeBook:
    def __init__(self, store: RunStore):
        self.store = store
        manifest = store.manifest()
        self.nodes: dict[str, dict[str, Any]] = dict(manifest.nodes or {})  # a resumed run keeps its nodes
        self.has_environment = bool(manifest.environment)
        # a stack's workers (harness.execution.stacks; local runs only): stack -> environment class
        self.stack_classes: dict[str, str] = dict(getattr(manifest, "stack_classes", None) or {})

    def on_ready(self, event: Ready) -> None:
        """A worker's ``Ready``; ``node`` is set by a fleet executor (None: this machine)."""
        env = event.environment
        if not env:
            return
        who = event.node.model_dump() if event.node is not None else local_node()
        fields: dict[str, Any] = {}
        cpus = who.get("cpus", env.get("cpu_count"))
        if event.stack != CURRENT_STACK:  # other libraries: another class, never the node's or the run's environment
            if event.stack not in self.stack_classes:
                self.stack_classes[event.stack] = environment_class(env, cpus)
                self.store.update_manifest(stack_classes=self.stack_classes)
            return
        if who["key"] not in self.nodes:
            self.nodes[who["key"]] = node_fields(
                env,
                key=who["key"],
                hostname=who["hostname"],
                ray_node_id=who.get("ray_node_id"),
                cpus=cpus,
                gpus=who.get("gpus"),
            )
            fields["nodes"] = self.nodes
        # a worker capped at another CPU kernel level (harness.isa) is another environment
        # class on the same node: every class the node ran under is kept, never merged
        kernels = env.get("kernels") if isinstance(env.get("kernels"), dict) else None
        if kernels:
            classes = self.nodes[who["key"]].setdefault("kernel_classes", {})
            label = str(kernels.get("isa") or "native")
            if label not in classes:
                classes[label] = environment_class(env, cpus)
                fields["nodes"] = self.nodes
        if not self.has_environment:  # the run's environment: the first node's, as before fleets
            fields["environment"] = env
            self.has_environment = True
        if fields:
            self.store.update_manifest(**fields)

    def stamp(self, record: Record | dict[str, Any]) -> dict[str, Any]:
        """The record with its node (the executor's, or this machine for local workers)."""
        if isinstance(record, Record):
            record = record.model_dump(exclude_unset=True)
        if "node" in record and record["node"] is None:
            return record  # no node ran it (an executor said so)
        if record.get("status") == "skipped" and "worker_pid" not in record:
            return record  # decided by the driver before any node ran it
        who = dict(record.get("node") or local_node())
        entry = self.nodes.get(who["key"])
        # the level the worker ran at (a relative level such as below-native as it resolved there)
        kernels = (record.get("determinism") or {}).get("kernels") or {}
        isa = kernels.get("isa") or (record.get("axes") or {}).get("isa", "native")
        stack = (record.get("axes") or {}).get("stack", CURRENT_STACK)
        by_kernels = (entry or {}).get("kernel_classes") or {}
        if stack != CURRENT_STACK:
            by_kernels = {isa: self.stack_classes.get(stack)}
        who.setdefault("env_class", by_kernels.get(isa) or (entry["env_class"] if entry else None))
        return {**record, "node": {k: who.get(k) for k in ("key", "hostname", "ray_node_id", "env_class")}}
