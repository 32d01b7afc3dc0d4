"""Generated protobuf and gRPC code for mesh.v1 (see protos/generate.py)."""
