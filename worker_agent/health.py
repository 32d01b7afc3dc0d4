"""grpc.health.v1 for the agent: liveness on "" and readiness on `READINESS_SERVICE`.

Liveness is SERVING from start until stop. Readiness is SERVING while the
agent takes work (started, preloaded when asked to) and turns NOT_SERVING
before a drain begins, so an orchestrator stops counting on the node first.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

LIVENESS_SERVICE = ""
READINESS_SERVICE = "readiness"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthEndpoint:
    """A small gRPC server carrying only the health service."""

    def __init__(self, host: str, port: int) -> None:
        self._address = f"{host}:{port}"
        self._servicer = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.port = 0
        """The bound port, once started."""

    async def start(self) -> int:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        self.port = server.add_insecure_port(self._address)
        if not self.port:
            raise OSError(f"cannot bind the health endpoint to {self._address}")
        await self._servicer.set(LIVENESS_SERVICE, _SERVING)
        await self._servicer.set(READINESS_SERVICE, _NOT_SERVING)
        await server.start()
        self._server = server
        return self.port

    async def set_ready(self, ready: bool) -> None:
        await self._servicer.set(READINESS_SERVICE, _SERVING if ready else _NOT_SERVING)

    async def stop(self, grace_s: float = 0.5) -> None:
        await self._servicer.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
