"""`Cluster`: fleet health, models, a status stream, pending demand, worker drain."""

from __future__ import annotations

import asyncio

from mesh.errors import MeshError
from mesh.services.inference import abort_with
from mesh.v1 import cluster_pb2, cluster_pb2_grpc


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, router) -> None:
        # `router` is mesh.router.Router; typed loosely to avoid an import cycle.
        self._router = router

    async def GetHealth(self, request, context):
        return cluster_pb2.GetHealthResponse(health=self._router.cluster_health())

    async def ListModels(self, request, context):
        return cluster_pb2.ListModelsResponse(models=self._router.model_summaries())

    async def GetModel(self, request, context):
        try:
            return cluster_pb2.GetModelResponse(model=self._router.find_model(request.model))
        except MeshError as error:
            await abort_with(context, error)

    async def WatchStatus(self, request, context):
        interval_s = min(max(request.interval_ms or 1000, 100), 60_000) / 1000.0
        while True:
            yield cluster_pb2.WatchStatusResponse(health=self._router.cluster_health())
            await asyncio.sleep(interval_s)

    async def GetPendingDemand(self, request, context):
        return cluster_pb2.GetPendingDemandResponse(demand=self._router.pending_demand())

    async def DrainWorker(self, request, context):
        found = self._router.drain_worker(request.worker_id, grace_s=request.grace_ms / 1000.0)
        return cluster_pb2.DrainWorkerResponse(found=found)
