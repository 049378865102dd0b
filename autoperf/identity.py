"""Who wrote a record: the host, this process start's instance id, the Discord shards it runs.

Every record carries ``host`` and ``instance_id`` (and ``shard_ids`` once a gateway identified), so
logs, the store and exports from many processes and machines can be told apart and merged.
``FIELDS`` is replaced whole on a change, never edited: the writer reads it without a lock.
"""
from __future__ import annotations

import os
import socket


def _new_instance_id() -> str:
    # Random per process start (a forked child gets its own): OTel's service.instance.id.
    return os.urandom(16).hex()


host = socket.gethostname()
instance_id = _new_instance_id()
#: The fields every record gets, in this order.
FIELDS = {"host": host, "instance_id": instance_id}


def shard_ids() -> list:
    return list(FIELDS.get("shard_ids") or ())


def add_shard(shard_id) -> None:
    """A Discord gateway of this process identified as ``shard_id`` (0 for an unsharded client)."""
    global FIELDS
    try:
        shard_id = int(shard_id or 0)
    except (TypeError, ValueError):
        return
    current = FIELDS.get("shard_ids") or []
    if shard_id not in current:
        FIELDS = {**FIELDS, "shard_ids": sorted([*current, shard_id])}


def on_fork() -> None:
    """A forked child is a new process start: a new instance id; it runs none of the parent's shards."""
    global instance_id, FIELDS
    instance_id = _new_instance_id()
    FIELDS = {"host": host, "instance_id": instance_id}
