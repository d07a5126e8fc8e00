"""Local stack orchestration: a real redis-server, a real tritonserver and the gateway.

Used by ``make run``, the integration-test fixtures and the benchmarks.
"""
