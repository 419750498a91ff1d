"""The ``api_tokens`` projection: one row per API token (its hash, scope and collections), revoked
ones kept with the time they were revoked."""

from __future__ import annotations

from app.catalogue import events as ev
from app.catalogue.codec import decode
from app.catalogue.ids import TOKEN_STREAM_PREFIX
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn, Projector

HANDLED = frozenset({ev.ApiTokenCreated.TYPE, ev.ApiTokenRevoked.TYPE})


class TokensProjector(Projector):
    name = "tokens"
    tables = ("api_tokens",)
    per_document = False

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        for recorded in events:
            if recorded.type not in HANDLED or not recorded.stream_id.startswith(TOKEN_STREAM_PREFIX):
                continue
            event = decode(recorded)
            if isinstance(event, ev.ApiTokenCreated):
                await conn.execute(
                    query("tokens", "insert"),
                    event.token_id, event.name, event.scope, event.token_sha256, event.collections,
                    recorded.recorded_at, recorded.metadata.get("actor"), recorded.stream_version,
                )  # fmt: skip
            elif isinstance(event, ev.ApiTokenRevoked):
                await conn.execute(
                    query("tokens", "revoke"),
                    event.token_id,
                    recorded.recorded_at,
                    event.reason,
                    recorded.stream_version,
                )
