"""The batching policy: pure decisions over a queue, no awaits, the time passed in.

Requests batch only with requests of the same `BatchKey` (model, profile,
operation, LoRA adapter): a batch runs as one forward pass of one model
configuration. For one key's FIFO queue, `decide_batch` answers either "run
the first n now" or "nothing to run before t":

- A batch is a prefix of the queue (FIFO within a key), at most
  `max_requests` requests and at most `max_tokens` estimated tokens. A single
  request above the token budget still runs, alone, or it would never run.
- It runs now when it cannot grow (the next request would break a budget) or
  when its oldest request has waited `max_wait_s`; otherwise the answer is to
  wait until the oldest request's wait is up. No request waits on the policy
  for longer than `max_wait_s`.

A small `max_wait_s` costs little latency and buys fuller batches on a
backend that is idle; on a busy backend, requests pile up while a batch runs
and the next decision takes them all at once anyway.

Tokens are estimated from text length, cheaply (no tokenizer on the hot path):
about four characters per WordPiece/BPE token of English, plus the [CLS] and
[SEP] a text is wrapped in. Budgets are a guard against oversize batches, not
an exact measure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mesh.v1 import inference_pb2

CHARS_PER_TOKEN = 4
SPECIAL_TOKENS_PER_TEXT = 2


@dataclass(frozen=True, slots=True)
class BatchKey:
    """What requests must share to run in one batch."""

    model_id: str
    """Canonical model id."""
    profile: str
    """Profile name; profiles can carry different runtime options."""
    operation: str
    """`encode`, `score` or `extract`."""
    lora: str = ""
    """LoRA adapter name; "" for the base model."""


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Budgets of one batch."""

    max_requests: int
    """Requests per batch at most (>= 1)."""
    max_tokens: int
    """Estimated tokens per batch at most (>= 1); one oversize request runs alone."""
    max_wait_s: float
    """Longest the oldest queued request waits for its batch to fill (>= 0)."""

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_tokens < 1 or self.max_wait_s < 0:
            raise ValueError(f"invalid batch limits {self}")


class Batchable(Protocol):
    """What the policy reads of a queued request."""

    @property
    def enqueued_at_s(self) -> float: ...

    @property
    def tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """Run the first `size` queued requests now, or (size 0) look again at `wake_at_s`."""

    size: int
    wake_at_s: float | None = None
    """When the decision may change without new arrivals; None: not before one."""

    @property
    def run_now(self) -> bool:
        return self.size > 0


_NOTHING_QUEUED = BatchDecision(0, None)


def decide_batch(queue: Iterable[Batchable], limits: BatchLimits, now_s: float) -> BatchDecision:
    """Decide for one key's queue (oldest first); see the module docstring."""
    size = 0
    tokens = 0
    oldest_s = 0.0
    can_grow = True
    for request in queue:
        if size == 0:
            oldest_s = request.enqueued_at_s
        elif size == limits.max_requests or tokens + request.tokens > limits.max_tokens:
            can_grow = False
            break
        size += 1
        tokens += request.tokens
    if size == 0:
        return _NOTHING_QUEUED
    if size >= limits.max_requests or tokens >= limits.max_tokens:
        can_grow = False
    due_s = oldest_s + limits.max_wait_s
    if not can_grow or now_s >= due_s:
        return BatchDecision(size)
    return BatchDecision(0, due_s)


def estimate_text_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + SPECIAL_TOKENS_PER_TEXT


def estimate_request_tokens(operation: str, request: object) -> int:
    """Estimated tokens of one request (see the module docstring)."""
    if operation == "encode":
        assert isinstance(request, inference_pb2.EncodeRequest)
        prefix = len(request.instruction) if request.HasField("instruction") else 0
        return sum(estimate_text_tokens(item.text) for item in request.items) + (
            prefix // CHARS_PER_TOKEN * len(request.items)
        )
    if operation == "score":
        assert isinstance(request, inference_pb2.ScoreRequest)
        # Counted per pair, the way a cross-encoder reads it; an overestimate for bi-encoders.
        query = estimate_text_tokens(request.query.text)
        return sum(query + estimate_text_tokens(item.text) for item in request.items)
    assert isinstance(request, inference_pb2.ExtractRequest)
    return sum(estimate_text_tokens(item.text) for item in request.items)
