"""Errors of the batch scoring job. Each ends the job with a defined exit status."""

from __future__ import annotations


class BatchError(Exception):
    """The job cannot run as asked (bad source, bad flags, checkpoint mismatch); exit 2."""

    exit_status = 2


class SourceError(BatchError):
    """The input cannot be read or does not fit the model spec."""


class CheckpointMismatch(BatchError):
    """The job id's checkpoint was written by a differently configured run."""


class JobFenced(BatchError):
    """Another process took this job over (same job id and shard); this one must stop."""

    exit_status = 3
