"""Differential check: random operation sequences give the same answers on MemoryStore and etcd.

Revisions are compared relative to each store's revision before the sequence,
lease ids through the order they were granted in, so what must match is the
behaviour: values, versions, revision steps, CAS outcomes, watch histories.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from mesh.coordination import (
    Condition,
    CoordinationStore,
    Delete,
    KeyValue,
    LeaseLostError,
    MemoryStore,
    MemoryStoreConfig,
    Put,
    WatchEvent,
)

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(90)]

KEYS = ["a", "b", "c/d", "c/e"]


class Normalizer:
    def __init__(self, base_revision: int) -> None:
        self.base = base_revision
        self.leases: list[int] = []

    def rev(self, revision: int) -> int:
        return revision - self.base

    def lease(self, lease_id: int) -> int:
        return self.leases.index(lease_id) + 1 if lease_id else 0

    def kv(self, kv: KeyValue | None) -> tuple | None:
        if kv is None:
            return None
        return (
            kv.key,
            kv.value,
            kv.version,
            self.rev(kv.create_revision),
            self.rev(kv.mod_revision),
            self.lease(kv.lease_id),
        )

    def event(self, event: WatchEvent) -> tuple:
        return (event.kind, event.key, self.rev(event.revision), self.kv(event.kv))


async def run_sequence(store: CoordinationStore, seed: int, steps: int) -> list:
    rng = random.Random(seed)
    base = (await store.get_prefix()).revision
    norm = Normalizer(base)
    out: list = []
    for _ in range(steps):
        key = rng.choice(KEYS)
        value = rng.choice([b"x", b"y", b""])
        op = rng.choice(
            ["put", "put", "get", "delete", "cas", "create", "txn", "grant", "lease_put", "revoke", "prefix"]
        )
        live = [lease for lease in norm.leases if lease]
        if op == "put":
            out.append(("put", norm.rev(await store.put(key, value))))
        elif op == "get":
            out.append(("get", norm.kv(await store.get(key))))
        elif op == "delete":
            out.append(("delete", await store.delete(key)))
        elif op == "cas":
            current = await store.get(key)
            guess = (current.mod_revision if current else 0) + rng.choice([0, 0, 1])
            result = await store.put_if_revision(key, value, guess)
            out.append(("cas", result.succeeded, {k: norm.kv(v) for k, v in result.current.items()}))
        elif op == "create":
            result = await store.create_if_absent(key, value)
            out.append(("create", result.succeeded, norm.rev(result.revision)))
        elif op == "txn":
            other = rng.choice(KEYS)
            try:
                result = await store.txn([Condition.absent(other)], [Put(key, value), Delete(other)])
                out.append(("txn", result.succeeded, norm.rev(result.revision)))
            except ValueError:
                out.append(("txn", "refused"))
        elif op == "grant":
            grant = await store.grant_lease(60)
            norm.leases.append(grant.lease_id)
            out.append(("grant", len(norm.leases)))
        elif op == "lease_put" and live:
            lease_id = rng.choice(norm.leases)
            try:
                out.append(("lease_put", norm.rev(await store.put(key, value, lease_id=lease_id))))
            except LeaseLostError:
                out.append(("lease_put", "lost"))
        elif op == "revoke" and live:
            index = rng.randrange(len(norm.leases))
            await store.revoke_lease(norm.leases[index])
            out.append(("revoke", index, norm.rev((await store.get_prefix()).revision)))
        elif op == "prefix":
            snap = await store.get_prefix("c/")
            out.append(("prefix", [norm.kv(kv) for kv in snap.items], norm.rev(snap.revision)))
    final = await store.get_prefix()
    out.append(("final", [norm.kv(kv) for kv in final.items], norm.rev(final.revision)))
    events = []
    if final.revision > base:
        async with store.watch_prefix("", start_revision=base + 1) as watch:
            async with asyncio.timeout(10):
                while not events or events[-1].revision < final.revision:
                    events.append(await anext(watch))
    out.append(("history", [norm.event(e) for e in events]))
    for lease_id in norm.leases:
        await store.revoke_lease(lease_id)
    return out


async def test_memory_and_etcd_agree_on_random_sequences(etcd_stores) -> None:
    for seed in range(30):
        memory = MemoryStore(MemoryStoreConfig(prefix=f"/diff-{seed}/"))
        etcd = await etcd_stores(prefix=f"/diff-{seed}/")
        expected = await run_sequence(memory, seed, steps=60)
        actual = await run_sequence(etcd, seed, steps=60)
        await memory.close()
        for step, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert got == want, f"seed {seed}, step {step}: etcd {got} != memory {want}"
