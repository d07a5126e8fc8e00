"""The summary a job prints at the end (text, or ``--json``), and its exit status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.batch.checkpoint import Failure
from gateway.batch.progress import format_duration

Outcome = Literal["complete", "incomplete", "interrupted", "nothing-to-do"]
SHOWN_FAILURES = 10


@dataclass(frozen=True, slots=True)
class Summary:
    job_id: str
    model: str
    version: str
    source: str
    shard: str
    outcome: Outcome
    entities: int
    """Entities in this shard of the input."""
    scored: int
    """Predictions written by this run."""
    skipped: int
    """Entities an earlier run of the job already finished (scored, invalid or stale)."""
    invalid: int
    """Invalid input rows found by this run (not scored)."""
    failed: int
    """Entities of chunks that failed on a dependency in this run (retried by the next run)."""
    elapsed_s: float
    prepare_s: float
    """Part of ``elapsed_s`` spent reading the file or taking the feature-store snapshot."""
    job_scored: int
    """Job totals from the checkpoint, all runs together."""
    job_invalid: int
    job_failed: int
    failures: list[Failure] = field(default_factory=list)
    """A bounded sample of the job's failed entities, with reasons."""
    stale: int = 0
    """Entities not scored by this run because their features were older than the model's
    ``feature_freshness.max_age_s`` (``on_violation: reject``): a policy outcome, not a
    failure; they do not change the exit status."""
    job_stale: int = 0
    snapshot: str | None = None
    """Feature-store source: how its entities were listed (``index`` | ``scan``)."""

    @property
    def rate_per_s(self) -> float:
        handled = self.scored + self.invalid + self.stale + self.failed
        return handled / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_status(self) -> int:
        """0: every entity of the shard is scored (or not scored by the freshness policy).
        1: some are invalid, failed or not done."""
        clean = self.job_invalid == 0 and self.job_failed == 0
        return 0 if clean and self.outcome in ("complete", "nothing-to-do") else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "model": self.model,
            "version": self.version,
            "source": self.source,
            "shard": self.shard,
            "outcome": self.outcome,
            "entities": self.entities,
            "scored": self.scored,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "stale": self.stale,
            "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3),
            "prepare_s": round(self.prepare_s, 3),
            "rate_per_s": round(self.rate_per_s, 1),
            "job": {
                "scored": self.job_scored,
                "invalid": self.job_invalid,
                "stale": self.job_stale,
                "failed": self.job_failed,
            },
            "snapshot": self.snapshot,
            "failures": [{"entity": f.entity, "reason": f.reason} for f in self.failures],
            "exit_status": self.exit_status,
        }

    def text(self) -> str:
        head = (
            f"batch-score {self.model} v{self.version}  shard {self.shard}  "
            f"source {self.source}  job {self.job_id}"
        )
        if self.outcome == "nothing-to-do":
            lines = [
                head,
                f"  nothing left to do: the job already finished all {self.entities:,} "
                "entities (--restart scores them again)",
            ]
        else:
            lines = [
                head,
                f"  entities  {self.entities:>12,}  in this shard",
                f"  scored    {self.scored:>12,}  this run",
                f"  skipped   {self.skipped:>12,}  already done by an earlier run",
                f"  failed    {self.invalid + self.failed:>12,}  this run "
                f"({self.invalid:,} invalid input, {self.failed:,} on dependency errors)",
            ]
            if self.stale or self.job_stale:
                lines.append(
                    f"  stale     {self.stale:>12,}  this run, not scored: features older than "
                    "the model's feature_freshness allows (on_violation: reject)"
                )
            lines.append(
                f"  elapsed   {_seconds(self.elapsed_s):>12}  {self.rate_per_s:,.0f} entities/s "
                f"({_seconds(self.prepare_s)} reading the input)"
            )
        stale = f", {self.job_stale:,} stale" if self.job_stale else ""
        lines.append(
            f"  job total: {self.job_scored:,} scored, {self.job_invalid:,} invalid{stale}, "
            f"{self.job_failed:,} failed (to retry)"
        )
        if self.snapshot == "scan":
            lines.append(
                "  note: the namespace has no complete id index, so its entities were listed "
                "by SCAN over the whole keyspace; `python -m gateway reindex-features` builds it"
            )
        if self.failures:
            shown = self.failures[:SHOWN_FAILURES]
            total_failed = self.job_invalid + self.job_failed
            lines.append(f"  failures (first {len(shown)} of {total_failed:,}):")
            lines += [f"    {f.entity}: {f.reason}" for f in shown]
        lines.append(f"  outcome: {self.outcome}, exit status {self.exit_status}")
        return "\n".join(lines)


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 60 else format_duration(value)
