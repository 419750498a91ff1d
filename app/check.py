"""``chronos check``: integrity of the log, the blob store and the projections in a live database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.alerts.state import recent_alerts
from events.sqlfiles import query


@dataclass
class Finding:
    severity: str  # "error" | "warning"
    check: str
    message: str
    examples: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "check": self.check,
            "message": self.message,
            "examples": [str(e) for e in self.examples[:10]],
        }


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def add(self, severity: str, check: str, message: str, examples: list[Any] | None = None) -> None:
        self.findings.append(Finding(severity, check, message, examples or []))


async def _rows_check(
    pool: asyncpg.Pool,
    report: Report,
    name: str,
    severity: str,
    message: Callable[[list[asyncpg.Record]], str],
    example: Callable[[asyncpg.Record], Any],
    *args: Any,
    check: str | None = None,
) -> list[asyncpg.Record]:
    """Run the named check query (``sql/queries/check.sql``); each row it returns is one problem,
    reported under ``check`` (default: the query's name)."""
    rows = await pool.fetch(query("check", name), *args)
    if rows:
        report.add(severity, check or name, message(rows), [example(r) for r in rows])
    return rows


async def _table_exists(pool: asyncpg.Pool, name: str) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


HELD_BACK_WARN_S = 30.0
"""Committed events unreadable for longer than this are reported (a concurrent append holds some back for
milliseconds; a forgotten transaction, anywhere on the server, for as long as it stays open)."""


async def run_checks(pool: asyncpg.Pool, *, behind_warn: int = 0, held_back_warn_s: float = HELD_BACK_WARN_S) -> Report:
    report = Report()
    report.stats["events"] = await pool.fetchval("SELECT count(*) FROM events")
    report.stats["streams"] = await pool.fetchval("SELECT count(DISTINCT stream_id) FROM events")

    await _rows_check(
        pool, report, "stream_gaps", "error",
        lambda rows: f"{len(rows)} stream(s) have gaps in their versions",
        lambda r: f"{r['stream_id']}: {r['events']} events, max version {r['max_version']}", check="stream_versions",
    )  # fmt: skip
    await _rows_check(
        pool, report, "duplicate_results", "error",
        lambda rows: f"{len(rows)} job(s) recorded a result more than once",
        lambda r: f"job {r['job_id']}: {r['n']}× {r['type']}",
    )  # fmt: skip
    await _rows_check(
        pool, report, "duplicate_costs", "error",
        lambda rows: f"{len(rows)} result(s) have duplicated cost entries",
        lambda r: f"{r['caused_by']} {r['resource']}: {r['n']}",
    )  # fmt: skip
    undelivered = [a for a in await recent_alerts(pool) if a.status == "failed"]
    if undelivered:
        report.add(
            "warning",
            "budget_alerts",
            f"{len(undelivered)} budget alert(s) could not be delivered to the webhook "
            "(check CHRONOS_ALERT_WEBHOOK_URL, then chronos costs --resend-alerts)",
            [f"{a.crossed.month} {a.crossed.threshold_pct} %: {a.failures[-1][1].error}" for a in undelivered],
        )

    refs = [r["ref"] for r in await pool.fetch(query("check", "referenced_blobs"))]
    report.stats["referenced_blobs"] = len(refs)
    await _rows_check(
        pool, report, "missing_blobs", "error",
        lambda rows: f"{len(rows)} blob(s) referenced by events are missing (replay would fail for them)",
        lambda r: r["ref"], refs,
    )  # fmt: skip
    await _rows_check(
        pool, report, "unreferenced_blobs", "warning",
        lambda rows: f"{len(rows)} blob(s) ({sum(r['size'] for r in rows)} bytes) are referenced by no event (garbage)",
        lambda r: r["sha256"], refs,
    )  # fmt: skip
    orphans = await pool.fetchval(query("check", "orphan_chunks"))
    if orphans:
        report.add(
            "warning",
            "orphan_chunks",
            f"{orphans} interrupted upload(s) left chunks behind (removed by blob garbage collection)",
        )

    behind: dict[str, int] = {}
    for sub in await pool.fetch(query("check", "subscriptions")):
        n = await pool.fetchval(query("check", "behind"), str(sub["tx_id"]), sub["position"])
        behind[sub["name"]] = n
        if n > behind_warn:
            report.add("warning", "subscription_behind", f"subscription {sub['name']} is {n} event(s) behind the log")
    report.stats["subscriptions_behind"] = behind
    await _check_held_back(pool, report, held_back_warn_s)

    if await _table_exists(pool, "jobs"):
        await _rows_check(
            pool, report, "stale_jobs", "warning",
            lambda rows: f"{len(rows)} job(s) hold a lease that expired over 10 minutes ago (no worker is running?)",
            lambda r: f"{r['stage']} {r['document_id']}",
        )  # fmt: skip
    if await _table_exists(pool, "documents"):
        absent = await pool.fetch(query("check", "documents_missing"))
        projectors = [name for name in behind if name not in ("dispatcher", "budget-alerts")]  # not projections
        caught_up = bool(projectors) and not any(behind[name] > 0 for name in projectors)
        if absent and caught_up:
            report.add(
                "error",
                "documents_projection",
                f"{len(absent)} document(s) in the log have no row in "
                "documents although the projections are caught up (run chronos replay)",
                [r["document_id"] for r in absent],
            )
    await _check_vectors(pool, report, behind)
    return report


async def _check_held_back(pool: asyncpg.Pool, report: Report, warn_s: float) -> None:
    """Events committed but not yet readable by any subscriber, and the transactions they wait for.

    Subscribers read the log below the server's oldest transaction in progress (``events/subscription.py``),
    so one long transaction with an id, in any database of the server, stops every projection, the
    dispatcher and search freshness until it ends (``docs/scaling.md``, shared servers).
    """
    held = await pool.fetchrow(query("check", "held_back"))
    assert held is not None  # an aggregate: one row
    report.stats["held_back_events"] = held["events"]
    report.stats["held_back_oldest_s"] = round(held["oldest_s"], 1) if held["oldest_s"] is not None else None
    if not held["events"] or held["oldest_s"] is None or held["oldest_s"] < warn_s:
        return
    holders = await pool.fetch(query("check", "horizon_holders"))
    report.add(
        "warning",
        "held_back",
        f"{held['events']} committed event(s) cannot be read by the projections, the oldest for "
        f"{held['oldest_s']:.0f} s: they wait for a transaction still open on the server (oldest listed "
        "first). End it (pg_terminate_backend(pid), or COMMIT/ROLLBACK PREPARED for a prepared one); set "
        "idle_in_transaction_session_timeout so a forgotten one cannot do it again",
        [_holder(h) for h in holders],
    )


def _holder(h: asyncpg.Record) -> str:
    where = f"pid {h['pid']}" if h["pid"] is not None else f"prepared {h['application']!r}"
    parts = [where, f"database {h['database']}", f"role {h['role']}"]
    if h["kind"] == "session" and h["application"]:
        parts.append(f"application {h['application']!r}")
    parts.append(f"{h['state'] or 'state hidden'}")
    if h["open_s"] is not None:
        parts.append(f"open {h['open_s']:.0f} s")
    parts.append(f"id age {h['xid_age']}")
    if h["query"]:
        parts.append(f"last query: {h['query']}")
    return ", ".join(parts)


async def _check_vectors(pool: asyncpg.Pool, report: Report, behind: dict[str, int]) -> None:
    """Searchable documents search cannot find, and vectors the projector refused."""
    if not await _table_exists(pool, "vector_problems"):
        return
    await _rows_check(
        pool, report, "vector_problems", "error",
        lambda rows: f"{len(rows)} embedding result(s) could not be projected (the documents keep earlier vectors)",
        lambda r: f"{r['document_id']} {r['model']}: {r['problem']}",
    )  # fmt: skip
    caught_up = all(behind.get(f"projection:{name}", 1) == 0 for name in ("documents", "index"))
    if not caught_up:
        return
    await _rows_check(
        pool, report, "searchable_without_vectors", "error",
        lambda rows: f"{len(rows)} searchable document(s) have no vectors for their current chunk set: search "
        "cannot find them (chronos replay --projection vectors rebuilds them from the log; "
        "chronos reprocess --stage embed re-embeds)",
        lambda r: r["document_id"],
    )  # fmt: skip
