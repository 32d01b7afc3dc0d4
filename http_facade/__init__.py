"""HTTP facade: the documented SIE REST + WebSocket API over a MeshService.

In-process (the router's own process, no hop):

    app = create_app(router, FacadeConfig())
    runner = await start_http_server(app, "0.0.0.0", 8080)

Own process, talking gRPC to router replicas: `mesh facade --router a:50051,b:50051`,
`--router dns:///router-headless:50051` or `--etcd http://etcd:2379`
(`add_facade_arguments` + `run_facade`).
"""

from http_facade.app import create_app
from http_facade.cli import (
    add_facade_arguments,
    facade_config,
    router_discovery_config,
    run_facade,
    start_http_server,
)
from http_facade.config import SIE_API_VERSION, FacadeConfig
from http_facade.grpc_client import GrpcMeshClient

__all__ = [
    "SIE_API_VERSION",
    "FacadeConfig",
    "GrpcMeshClient",
    "add_facade_arguments",
    "create_app",
    "facade_config",
    "router_discovery_config",
    "run_facade",
    "start_http_server",
]
