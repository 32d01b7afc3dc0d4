"""inference-mesh router: registry, routing, dispatch and the gRPC services.

Kept import-light on purpose: `mesh.v1` (generated wire code) is imported by
the worker agent and the facade too.
"""

__version__ = "0.1.0"
