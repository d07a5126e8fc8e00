"""Batch scoring: ``python -m gateway batch-score`` fills the prediction cache in bulk.

sharding.py   which entities a shard owns (crc32 of the id)
sources.py    file (pyarrow) and feature-store (id index or SCAN snapshot) sources, fixed chunks
matrix.py     model input matrices, built and validated column by column
checkpoint.py the checkpoint's layout and state (pure)
store.py      the job's Redis I/O: atomic commit scripts, snapshot, bulk feature reads
job.py        the async pipeline: bounded Triton concurrency, retries, exactly-once commits
progress.py   the progress line; report.py the summary; cli.py the command line
index.py      ``reindex-features``: (re)builds a namespace's id index and marks it complete
"""
