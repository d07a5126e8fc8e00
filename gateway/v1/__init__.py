"""Gateway gRPC API, version 1: ``gateway.proto`` and its generated code in ``_generated``."""
