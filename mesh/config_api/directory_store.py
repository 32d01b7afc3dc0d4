"""`ConfigStore` in a local directory (`SIE_CONFIG_STORE_DIR`), for one embedded router.

Layout:

    {dir}/models/{quoted model key}.json   {"model_id", "yaml", "source", "epoch"}
    {dir}/idempotency/{key hash}.json      {"expires_at_s", "record"}
    {dir}/.lock                            flock()ed around every write

Each model file carries the epoch its write set and the store's epoch is the
highest of them, so a write of one model and its epoch bump is one atomic
file replacement (write a temporary file, fsync, rename over, fsync the
directory): a crash leaves either the old or the new version, never half.
The compare-and-swap runs under an exclusive flock, so even two processes
pointed at one directory cannot lose a write; they do not, however, see
each other's writes until restart (nothing watches the directory), which is
why a directory serves one router.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from mesh.config_api.store import (
    ConfigChange,
    ConfigSnapshot,
    ConfigStore,
    ConfigWatch,
    StoredModel,
    WriteBase,
    decode_model,
    encode_model,
    model_key,
)
from mesh.errors import ErrorCode, MeshError

log = logging.getLogger(__name__)

_SUFFIX = ".json"
# Below NAME_MAX (255) with room for the suffix and a temporary-file prefix.
_MAX_FILE_STEM = 200


def model_file_stem(model_id: str) -> str:
    """A file name for a model: the quoted key when short enough, else a digest."""
    key = model_key(model_id)
    quoted = urllib.parse.quote(key, safe="")
    if len(quoted) <= _MAX_FILE_STEM:
        return quoted
    return "sha256-" + hashlib.sha256(key.encode()).hexdigest()


def _unavailable(what: str, error: OSError) -> MeshError:
    return MeshError(
        ErrorCode.STORE_UNAVAILABLE, f"config directory: cannot {what}: {error}", retry_after_s=2.0
    )


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, never a torn one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a power cut
    finally:
        os.close(directory)


class DirectoryConfigStore(ConfigStore):
    """Model configs as files in one directory; see the module docstring."""

    def __init__(self, directory: Path | str) -> None:
        self._root = Path(directory)
        self._models = self._root / "models"
        self._idempotency = self._root / "idempotency"
        self._lock_path = self._root / ".lock"
        # flock serialises processes; this serialises the threads of this one
        # (flock locks belong to the open file, which each call opens anew).
        self._local_lock = asyncio.Lock()

    @property
    def description(self) -> str:
        return f"directory {self._root}"

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._prepare)
        except OSError as error:
            # Not fatal here: the service reports the store unavailable and retries.
            log.error("config directory %s is not usable: %s", self._root, error)

    def _prepare(self) -> None:
        self._models.mkdir(parents=True, exist_ok=True)
        self._idempotency.mkdir(parents=True, exist_ok=True)

    # --- reads ------------------------------------------------------------------

    def _model_files(self) -> Iterator[Path]:
        if not self._models.is_dir():
            return iter(())
        return (path for path in sorted(self._models.iterdir()) if path.suffix == _SUFFIX)

    def _read_model(self, path: Path) -> StoredModel | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        # The epoch doubles as the CAS token: every write of a model raises it.
        model = decode_model(data, 0, str(path))
        return StoredModel(model.model_id, model.yaml, model.epoch, model.epoch, model.source)

    def _read_all(self) -> list[StoredModel]:
        models = []
        for path in self._model_files():
            try:
                model = self._read_model(path)
            except MeshError as error:
                log.error("skipping config file: %s", error)
                continue
            if model is not None:
                models.append(model)
        return models

    def _snapshot(self) -> ConfigSnapshot:
        self._prepare()
        models = sorted(self._read_all(), key=lambda model: model.key)
        epoch = max([0, *(model.epoch for model in models)])
        return ConfigSnapshot(tuple(models), epoch, epoch)

    async def snapshot(self) -> ConfigSnapshot:
        try:
            return await asyncio.to_thread(self._snapshot)
        except OSError as error:
            raise _unavailable("read the stored models", error) from None

    def _path(self, model_id: str) -> Path:
        return self._models / (model_file_stem(model_id) + _SUFFIX)

    def _read_for_write(self, model_id: str) -> WriteBase:
        self._prepare()
        model = self._read_model(self._path(model_id))
        epoch = max([0, *(stored.epoch for stored in self._read_all())])
        return WriteBase(model, epoch, epoch)

    async def read_for_write(self, model_id: str) -> WriteBase:
        try:
            return await asyncio.to_thread(self._read_for_write, model_id)
        except OSError as error:
            raise _unavailable("read the stored model", error) from None

    # --- writes -----------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _compare_and_write(self, base: WriteBase, model_id: str, yaml_text: str) -> StoredModel | None:
        self._prepare()
        path = self._path(model_id)
        with self._exclusive():
            current = self._read_model(path)
            current_epoch = max([0, *(stored.epoch for stored in self._read_all())])
            expected_revision = base.model.revision if base.model else 0
            if (current.revision if current else 0) != expected_revision or current_epoch != base.epoch_token:
                return None
            epoch = base.epoch + 1
            write_atomically(path, encode_model(model_id, yaml_text, epoch))
        return StoredModel(model_id, yaml_text, epoch, epoch)

    async def compare_and_write(self, base: WriteBase, model_id: str, yaml_text: str) -> StoredModel | None:
        async with self._local_lock:
            try:
                return await asyncio.to_thread(self._compare_and_write, base, model_id, yaml_text)
            except OSError as error:
                raise _unavailable("write the model", error) from None

    def watch(self, after_revision: int) -> ConfigWatch:
        return _IdleWatch()

    # --- idempotency --------------------------------------------------------------

    def _get_record(self, key_hash: str) -> bytes | None:
        path = self._idempotency / (key_hash + _SUFFIX)
        try:
            entry = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("ignoring unreadable idempotency record %s", path)
            return None
        if float(entry.get("expires_at_s", 0)) <= time.time():
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return str(entry["record"]).encode()

    async def get_idempotency_record(self, key_hash: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._get_record, key_hash)
        except OSError as error:
            raise _unavailable("read an idempotency record", error) from None

    def _put_record(self, key_hash: str, record: bytes, ttl_s: float) -> None:
        self._prepare()
        path = self._idempotency / (key_hash + _SUFFIX)
        with self._exclusive():
            if self._get_record(key_hash) is not None:
                return  # the first answer stands
            # Wall clock: the record must outlive a restart, which monotonic time does not.
            entry = {"expires_at_s": time.time() + ttl_s, "record": record.decode()}
            write_atomically(path, json.dumps(entry).encode())
            self._prune_expired()

    def _prune_expired(self) -> None:
        now = time.time()
        for path in self._idempotency.glob("*" + _SUFFIX):
            try:
                if float(json.loads(path.read_bytes()).get("expires_at_s", 0)) <= now:
                    path.unlink()
            except (OSError, ValueError):
                continue

    async def put_idempotency_record(self, key_hash: str, record: bytes, ttl_s: float) -> None:
        async with self._local_lock:
            try:
                await asyncio.to_thread(self._put_record, key_hash, record, ttl_s)
            except OSError as error:
                raise _unavailable("write an idempotency record", error) from None


class _IdleWatch(ConfigWatch):
    """Nothing else writes the directory: the watch waits until closed."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()

    async def __anext__(self) -> ConfigChange:
        await self._closed.wait()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed.set()
