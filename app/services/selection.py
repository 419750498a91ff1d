"""Which documents a reprocess request is for: ids, every live document, the failed ones, or a
``--where`` predicate over the documents view.

A predicate is SQL written by whoever runs the command, so it is treated as hostile:

* it must be one boolean expression: balanced parentheses that never close more than they opened,
  no ``;`` and no comments outside string literals (checked here, so it cannot break out of the
  parentheses it is put in; ``filename = 'a;b'`` is fine);
* it runs inside ``select_documents_where()`` (``sql/views/030_selection.sql``), a SECURITY DEFINER
  function owned by ``chronos_selector``, a role that can read the ``v_selectable_documents`` view and
  nothing else (PostgreSQL refuses ``SET ROLE`` inside such a function, so it cannot climb back to the
  connection's role), in a READ ONLY transaction, under a statement timeout;
* the ids it yields are intersected with the live documents.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from app.errors import InvalidRequest, NotFound
from events.types import DbConn

PREDICATE_TIMEOUT_S = 10.0
MAX_PREDICATE = 2000
SELECTOR_ROLE = "chronos_selector"


class SelectionError(InvalidRequest):
    """The documents to reprocess could not be selected."""


class UnknownDocument(NotFound):
    """A document asked for by id does not exist."""


@dataclass(frozen=True)
class Selection:
    """Exactly one of the four ways to choose documents."""

    document_ids: tuple[str, ...] = ()
    all: bool = False
    failed: bool = False
    where: str | None = None


def check_predicate(text: str) -> str:
    """``text`` if it is one expression that cannot leave the parentheses it is put in; else SelectionError."""
    predicate = text.strip()
    if not predicate:
        raise SelectionError("--where needs a boolean expression over the documents view, e.g. \"status = 'failed'\"")
    if len(predicate) > MAX_PREDICATE:
        raise SelectionError(f"--where is longer than {MAX_PREDICATE} characters")
    depth = 0
    i, n = 0, len(predicate)
    while i < n:
        ch = predicate[i]
        if ch == "'":
            escaped = i > 0 and predicate[i - 1] in "eE" and (i == 1 or not predicate[i - 2].isalnum())
            i = _end_of_quoted(predicate, i, "'", backslash=escaped)
            continue
        if ch == '"':
            i = _end_of_quoted(predicate, i, '"', backslash=False)
            continue
        if ch == "$":
            tag_end = predicate.find("$", i + 1)
            tag = predicate[i : tag_end + 1] if tag_end > 0 else ""
            if tag and (tag == "$$" or tag[1:-1].replace("_", "a").isalnum()) and not tag[1].isdigit():
                close = predicate.find(tag, tag_end + 1)
                if close < 0:
                    raise SelectionError(f"--where has an unterminated {tag}-quoted string")
                i = close + len(tag)
                continue
        if predicate.startswith("--", i) or predicate.startswith("/*", i):
            raise SelectionError("--where may not contain SQL comments")
        if ch == ";":
            raise SelectionError("--where takes one boolean expression, not statements (';' outside a string)")
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectionError("--where closes a parenthesis it did not open")
        i += 1
    if depth:
        raise SelectionError("--where leaves a parenthesis open")
    return predicate


def _end_of_quoted(text: str, start: int, quote: str, *, backslash: bool) -> int:
    """Index just past the literal or identifier opened at ``start`` (doubled quotes stay inside)."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    kind = "identifier" if quote == '"' else "string"
    raise SelectionError(f"--where has an unterminated {quote}-quoted {kind}")


async def select_documents(pool: asyncpg.Pool, selection: Selection) -> list[str]:
    """Ids of live (not deleted) documents, oldest upload first; unknown or deleted ids are an error."""
    async with pool.acquire() as conn:
        if selection.document_ids:
            # From the log, not the projection: a document just uploaded is already there.
            from app.services.documents import document_states

            ids = list(dict.fromkeys(str(_uuid(d)) for d in selection.document_ids))
            found = await document_states(pool, ids)
            unknown = [d for d in ids if d not in found]
            if unknown:
                raise UnknownDocument(f"no document {unknown[0]} (see `chronos documents list`)")
            gone = [d for d in ids if found[d].deleted]
            if gone:
                raise SelectionError(f"document {gone[0]} was deleted; upload it again instead")
            return ids
        if selection.all:
            sql = "SELECT document_id FROM documents WHERE status <> 'deleted' ORDER BY uploaded_at, document_id"
            return [str(r[0]) for r in await conn.fetch(sql)]
        if selection.failed:
            sql = "SELECT document_id FROM documents WHERE status = 'failed' ORDER BY uploaded_at, document_id"
            return [str(r[0]) for r in await conn.fetch(sql)]
        if selection.where is None:
            raise SelectionError("choose documents: ids, all, failed, or a where predicate")
        return await _where(conn, check_predicate(selection.where))


async def _where(conn: DbConn, predicate: str) -> list[str]:
    owner = await conn.fetchval(
        "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'select_documents_where'"
    )
    if owner != SELECTOR_ROLE:
        raise SelectionError(
            f"--where is disabled on this database: the role {SELECTOR_ROLE} could not be set up "
            "(the migrating user needs CREATEROLE); use --document, --all or --failed"
        )
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {int(PREDICATE_TIMEOUT_S * 1000)}")
            rows = await conn.fetch(
                "SELECT d.document_id FROM select_documents_where($1) s JOIN documents d USING (document_id) "
                "WHERE d.status <> 'deleted' ORDER BY d.uploaded_at, d.document_id",
                predicate,
            )
    except asyncpg.QueryCanceledError as exc:
        raise SelectionError(f"--where took longer than {PREDICATE_TIMEOUT_S:g} s and was cancelled") from exc
    except asyncpg.PostgresError as exc:
        message = getattr(exc, "message", None) or str(exc)
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            message += " (a --where predicate can read only the columns of the documents view)"
        raise SelectionError(f"--where {predicate!r} failed: {message}") from exc
    return list(dict.fromkeys(str(r[0]) for r in rows))


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise SelectionError(f"{value!r} is not a document id") from None
