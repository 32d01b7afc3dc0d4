"""Packing a stream's queued records into messages, shared by both ends of the registry stream.

Each stream write costs far more than the bytes it carries, so records that
queued together (tasks on the router's side, finished tasks' outcomes on the
worker's) leave together: a run of consecutive records becomes one batch
message, built in place, and a lone record its plain single-record message.
Anything else in the queue keeps its place between the runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol


class Record(Protocol):
    def fill(self, target: Any) -> None:
        """Write this record into `target`, a fresh protobuf message of its kind."""


def pack_runs(
    entries: Iterable[Any],
    record_type: type[Record],
    envelope: Callable[[], Any],
    *,
    single: str,
    batch: str,
    items: str,
    limit: int,
) -> list[Any]:
    """`entries` in order, each run of `record_type` packed: one record into the
    envelope's `single` field, several (at most `limit` a message) into the
    repeated `items` field of its `batch` field."""
    out: list[Any] = []
    run: list[Record] = []

    def flush() -> None:
        message = envelope()
        if len(run) == 1:
            run[0].fill(getattr(message, single))
        else:
            repeated = getattr(getattr(message, batch), items)
            for record in run:
                record.fill(repeated.add())
        out.append(message)
        run.clear()

    for entry in entries:
        if isinstance(entry, record_type):
            run.append(entry)
            if len(run) >= limit:
                flush()
            continue
        if run:
            flush()
        out.append(entry)
    if run:
        flush()
    return out
