"""Event-driven lane: score business events from a Redis Stream in micro-batches.

``python -m gateway stream-worker`` reads a stream with a consumer group, accumulates
micro-batches (size or time threshold), applies the features events carry, scores each batch
through Triton in one call, writes the predictions to the prediction cache and to an output
stream, and acknowledges, at least once with idempotent effects. See docs/stream-lane.md.

Modules: ``settings`` (StreamSettings), ``events`` (event format, parsing, poison
classification), ``batcher`` (size/time accumulation), ``commit`` (the atomic publish-and-ack
script), ``worker`` (read/claim/process/ack loop), ``metrics``, ``cli``.
This package file imports nothing, so ``gateway.config`` can import the settings cheaply.
"""
