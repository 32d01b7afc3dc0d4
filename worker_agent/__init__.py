"""The worker agent: the process next to the model, one per GPU node.

It dials every router and keeps one registration stream to each, batches the
tasks they send by (model, profile, operation, LoRA adapter), runs each batch
on its backend and answers on the stream the task came from.

Programmatic use (tests, `mesh up`)::

    agent = WorkerAgent(AgentConfig(routers=("127.0.0.1:7070",)), FakeBackend(), load_catalog())
    await agent.start()
    ...
    await agent.drain(grace_s=5.0)
    await agent.stop()
"""

from worker_agent.agent import AGENT_VERSION, WorkerAgent
from worker_agent.backends import (
    Backend,
    BatchTarget,
    LoadedModel,
    backend_names,
    create_backend,
    register_backend,
)
from worker_agent.backends.fake import (
    FakeBackend,
    FakeBackendConfig,
    FakeEntity,
    fake_embedding,
    fake_entities,
    fake_score,
)
from worker_agent.batching import BatchDecision, BatchKey, BatchLimits, decide_batch, estimate_request_tokens
from worker_agent.config import AgentConfig, LinkSettings, ReconnectPolicy, default_worker_id
from worker_agent.health import LIVENESS_SERVICE, READINESS_SERVICE
from worker_agent.router_link import reconnect_delay_s
from worker_agent.status import AgentStatus, ModelReport

__all__ = [
    "AGENT_VERSION",
    "LIVENESS_SERVICE",
    "READINESS_SERVICE",
    "AgentConfig",
    "AgentStatus",
    "Backend",
    "BatchDecision",
    "BatchKey",
    "BatchLimits",
    "BatchTarget",
    "FakeBackend",
    "FakeBackendConfig",
    "FakeEntity",
    "LinkSettings",
    "LoadedModel",
    "ModelReport",
    "ReconnectPolicy",
    "WorkerAgent",
    "backend_names",
    "create_backend",
    "decide_batch",
    "default_worker_id",
    "estimate_request_tokens",
    "fake_embedding",
    "fake_entities",
    "fake_score",
    "reconnect_delay_s",
    "register_backend",
]
