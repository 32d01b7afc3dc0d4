"""gRPC servicers of the router: thin edges over the registry, dispatcher and views."""

from mesh.services.cluster import ClusterService
from mesh.services.inference import InferenceService
from mesh.services.worker_registry import RegistrySettings, WorkerRegistryService

__all__ = ["ClusterService", "InferenceService", "RegistrySettings", "WorkerRegistryService"]
