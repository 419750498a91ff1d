"""`chronos reprocess --where`: the predicate is hostile input. It runs as a role that can read only
the documents view, cannot climb back to the connection's role, is cut off by a timeout, cannot leave
its parentheses, and yields only live documents."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from app.services.selection import Selection, SelectionError, UnknownDocument, check_predicate, select_documents
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument


async def two_documents(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> list[str]:
    docs = []
    for name in ("a;b.pdf", "plain.pdf"):
        doc = SyntheticDocument(store, blobs, filename=name)
        await doc.upload(content=name.encode())
        docs.append(doc)
    await catch_up_all(pool, dsn)
    return [d.document_id for d in docs]


def where(text: str) -> Selection:
    return Selection(where=text)


async def test_legitimate_predicates(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> None:
    a, b = await two_documents(store, blobs, pool, dsn)
    assert await select_documents(pool, where("filename = 'a;b.pdf'")) == [a]
    assert await select_documents(pool, where("filename LIKE '%.pdf' AND (status = 'uploaded')")) == [a, b]
    assert await select_documents(pool, where("filename = $q$plain.pdf$q$")) == [b]
    assert await select_documents(pool, where("filename = 'it''s' OR filename = E'plain\\x2epdf'")) == [b]
    subquery = "\"filename\" IN (SELECT v.filename FROM v_selectable_documents v WHERE v.filename LIKE 'p%')"
    assert await select_documents(pool, where(subquery)) == [b]


@pytest.mark.parametrize(
    "predicate, message",
    [
        ("true) OR (status = 'deleted') --", "closes a parenthesis"),
        ("status = 'failed' -- and more", "comments"),
        ("true) OR (true", "closes a parenthesis"),
        ("true) UNION SELECT gen_random_uuid() WHERE (true", "closes a parenthesis"),
        ("true; DELETE FROM documents", "not statements"),
        ("(true", "open"),
        ("true /* x */", "comments"),
        ("filename = 'unterminated", "unterminated"),
        ("", "needs a boolean"),
    ],
)
def test_predicates_that_could_break_out_are_refused(predicate: str, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        check_predicate(predicate)


@pytest.mark.parametrize(
    "predicate",
    [
        "(SELECT count(*) FROM pg_authid) > 0",  # superuser-only catalogue
        "(SELECT count(*) FROM blobs) > 0",  # raw document bytes
        "(SELECT count(*) FROM events) > 0",  # the log (chunk texts of deleted documents)
        "length(pg_read_file('/etc/passwd')) > 0",
        "length(pg_read_file('/proc/self/environ')) > 0",  # the server's environment: API keys
        "(SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid())",
        "set_config('role', session_user, true) IS NOT NULL",
        "set_config('session_authorization', session_user, true) IS NOT NULL",
        "(SELECT count(*) FROM nextval('events_position_seq')) > 0",
        "lo_create(0) > 0",
        "(SELECT count(*) FROM (SELECT 1 FROM pg_ls_dir('.')) x) > 0",
    ],
)
async def test_predicate_cannot_reach_beyond_the_view(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, predicate: str
) -> None:
    await two_documents(store, blobs, pool, dsn)
    before = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
    with pytest.raises(SelectionError):
        await select_documents(pool, where(predicate))
    after = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
    assert after >= before - 1  # no other session of ours was terminated


async def test_predicate_runs_as_the_selector_role(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    a, b = await two_documents(store, blobs, pool, dsn)
    assert await select_documents(pool, where("current_user = 'chronos_selector'")) == [a, b]
    assert await select_documents(pool, where("NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")) == [
        a,
        b,
    ]


async def test_slow_predicate_is_cancelled(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services import selection

    monkeypatch.setattr(selection, "PREDICATE_TIMEOUT_S", 0.5)
    await two_documents(store, blobs, pool, dsn)
    started = time.monotonic()
    with pytest.raises(SelectionError, match="longer than"):
        await select_documents(pool, where("pg_sleep(20) IS NOT NULL"))
    assert time.monotonic() - started < 10


async def test_only_live_documents_and_no_phantoms(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    from app.commands.delete import delete_documents

    a, b = await two_documents(store, blobs, pool, dsn)
    await delete_documents(store, [a], "test")
    await catch_up_all(pool, dsn)
    assert await select_documents(pool, where("true")) == [b]
    assert await select_documents(pool, Selection(all=True)) == [b]
    with pytest.raises(SelectionError, match="deleted"):
        await select_documents(pool, Selection(document_ids=(a,)))
    with pytest.raises(UnknownDocument, match="no document"):
        await select_documents(pool, Selection(document_ids=(str(uuid.uuid4()),)))


async def test_predicate_cannot_notify(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> None:
    """pg_notify() is revoked from PUBLIC (sql/views/090_analyst_role.sql): a predicate cannot wake, or
    flood, the listeners; in a READ ONLY transaction PostgreSQL would allow it."""
    await two_documents(store, blobs, pool, dsn)
    received: list[str] = []
    listener = await asyncpg.connect(dsn)
    await listener.add_listener("chronos_events", lambda *args: received.append(args[3]))
    try:
        for predicate in (
            "pg_notify('chronos_events', '999999') IS NOT NULL",
            "(SELECT count(pg_notify('chronos_jobs', d::text)) FROM generate_series(1, 3) d) > 0",
        ):
            with pytest.raises(SelectionError, match="permission denied for function pg_notify"):
                await select_documents(pool, where(predicate))
        await listener.execute("SELECT 1")  # a round trip: any notification sent would be in by now
    finally:
        await listener.close()
    assert received == []
