"""Who sees what: the one place that decides whether a principal may see a document, a collection or
an event stream (issue 15, isolation).

A token made with ``--collection`` (``Principal.collections``) sees only those collections. Everything
of another collection is *absent* to it: the same ``DocumentNotFound`` / ``NotFound`` (404) with the same
message as for an id that does not exist, never a 403 that would confirm it exists. A principal of
``None`` (an anonymous read while ``CHRONOS_API_READ_AUTH`` is off) and unrestricted tokens (the
bootstrap ``CHRONOS_API_TOKENS`` among them) see every collection.

* ``visible_document`` — a document id, or DocumentNotFound: every ``/documents/{document_id}…`` route
  goes through it (app/api/auth.py calls it before the endpoint runs, so a new route cannot forget it).
* ``collections_filter`` — the collections a listing, search, cost report or event feed may show
  (None: all), passed down to the SQL.
* ``visible_collection`` / ``upload_collection`` — a collection named by a request, or NotFound.
* ``visible_events`` — a page of the global log cut down to the streams the principal may see.

A document's collection is the ``documents`` projection's (rows of deleted documents stay there, so a
deleted document of B stays invisible to A); a document the projection has not reached yet is looked
up in its upload event in the log. A document whose collection cannot be found is invisible to a
restricted principal.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import asyncpg

from app.catalogue.collections import DEFAULT as DEFAULT_COLLECTION
from app.catalogue.collections import unknown_collection, validate_collection_name
from app.catalogue.ids import COLLECTION_STREAM_PREFIX, STREAM_PREFIX, document_id_from_stream
from app.errors import InvalidRequest, NotFound
from app.services.documents import DocumentNotFound, parse_document_id
from app.services.tokens import Principal
from events.sqlfiles import query
from events.types import DbConn, RecordedEvent


def restricted(principal: Principal | None) -> bool:
    return principal is not None and principal.collections is not None


def collections_filter(principal: Principal | None) -> list[str] | None:
    """The collections ``principal`` may see, for SQL filters (``$n::text[] IS NULL OR collection = ANY``)."""
    if principal is None or principal.collections is None:
        return None
    return list(principal.collections)


def narrowed(principal: Principal | None, requested: str | None) -> list[str] | None:
    """The collections a request asking for ``requested`` (None: all it may see) reads; NotFound for one
    it may not see."""
    if requested is None:
        return collections_filter(principal)
    return [visible_collection(principal, requested)]


def within(principal: Principal | None, requested: list[str] | None) -> list[str] | None:
    """The collections a request naming ``requested`` (None: all it may see) reads; NotFound for a name
    it may not see."""
    if requested is None:
        return collections_filter(principal)
    return [visible_collection(principal, name) for name in requested]


def absent_document(document_id: str) -> DocumentNotFound:
    """The error for a document that does not exist — and, word for word, for one the principal may not see."""
    return DocumentNotFound(f"no document {document_id} (see `chronos documents list`)")


def absent_collection(name: str) -> NotFound:
    """The error for a collection that does not exist — and, word for word, for one the principal may not see."""
    return unknown_collection(name)


def visible_collection(principal: Principal | None, name: str) -> str:
    """``name`` when the principal may see it; NotFound (as for a collection that does not exist) else."""
    validate_collection_name(name)
    if principal is not None and not principal.sees(name):
        raise absent_collection(name)
    return name


def upload_collection(principal: Principal | None, requested: str | None) -> str:
    """Where an upload goes: the collection asked for (which the principal must see), else the token's
    only collection, else ``default``."""
    if requested is not None:
        return visible_collection(principal, requested)
    if principal is None or principal.collections is None:
        return DEFAULT_COLLECTION
    if len(principal.collections) == 1:
        return principal.collections[0]
    raise InvalidRequest(
        f"this token may upload into {', '.join(principal.collections)}: say which (?collection=NAME, or the "
        "collection form field)"
    )


async def collection_of(conn: asyncpg.Pool | DbConn, document_id: str) -> str | None:
    """A document's collection: the documents projection's, else its upload event's; None when unknown."""
    rows = await collections_of(conn, [document_id])
    return rows.get(document_id)


async def collections_of(conn: asyncpg.Pool | DbConn, document_ids: Sequence[str]) -> dict[str, str]:
    """The collections of those of ``document_ids`` that exist (projection first, then the log)."""
    ids = list(dict.fromkeys(document_ids))
    if not ids:
        return {}
    rows = await conn.fetch(query("visibility", "document_collections"), [uuid.UUID(d) for d in ids])
    found = {str(r["document_id"]): r["collection"] for r in rows}
    missing = [d for d in ids if d not in found]
    if missing:
        rows = await conn.fetch(query("visibility", "uploaded_collections"), [STREAM_PREFIX + d for d in missing])
        for r in rows:
            doc = document_id_from_stream(r["stream_id"])
            if doc is not None:
                found[doc] = r["collection"] or DEFAULT_COLLECTION
    return found


async def visible_document(conn: asyncpg.Pool | DbConn, principal: Principal | None, document_id: str) -> str:
    """The document id (canonical form) when the principal may see the document; DocumentNotFound else.

    It does not say whether the document exists: for a visible id that does not exist the caller's own
    lookup answers (with the same message)."""
    doc = parse_document_id(document_id)
    if not restricted(principal):
        return doc
    assert principal is not None
    collection = await collection_of(conn, doc)
    if collection is None or not principal.sees(collection):
        raise absent_document(doc)
    return doc


async def visible_events(
    conn: asyncpg.Pool | DbConn, principal: Principal | None, events: Iterable[RecordedEvent]
) -> list[RecordedEvent]:
    """The events of streams the principal may see: every one for an unrestricted principal; for a
    restricted one the streams of documents in its collections and of those collections themselves
    (tokens, searches, budgets and batches of the whole service are not shown)."""
    events = list(events)
    if not restricted(principal):
        return events
    assert principal is not None
    docs = [d for d in (document_id_from_stream(e.stream_id) for e in events) if d is not None and _is_uuid(d)]
    collections = await collections_of(conn, docs)
    out = []
    for e in events:
        doc = document_id_from_stream(e.stream_id)
        if doc is not None:
            if doc in collections and principal.sees(collections[doc]):
                out.append(e)
        elif e.stream_id.startswith(COLLECTION_STREAM_PREFIX) and principal.sees(
            e.stream_id.removeprefix(COLLECTION_STREAM_PREFIX)
        ):
            out.append(e)
    return out


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
