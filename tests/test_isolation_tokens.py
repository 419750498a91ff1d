"""Tokens scoped to collections (issue 15): ``chronos tokens create --collection``, what a principal
sees, and the bootstrap tokens staying admin over every collection."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.services import tokens, visibility
from app.services.tokens import Principal, bootstrap_principal
from events.store import EventStore
from tests.cli_support import Cli, cli_env


def test_a_principal_sees_its_collections_only() -> None:
    limited = Principal("t", "alpha-reader", "read", ("alpha", "beta"))
    assert limited.sees("alpha") and limited.sees("beta") and not limited.sees("default")
    assert visibility.collections_filter(limited) == ["alpha", "beta"]
    everything = Principal("t", "root", "admin")
    assert everything.sees("anything") and visibility.collections_filter(everything) is None
    boot = bootstrap_principal("boot-token-0123456789", ("boot-token-0123456789",))
    assert boot is not None and boot.scope == "admin" and boot.collections is None and boot.sees("bravo")
    assert visibility.collections_filter(None) is None  # an anonymous read while read auth is off


def test_where_a_limited_token_uploads() -> None:
    one = Principal("t", "w", "write", ("alpha",))
    two = Principal("t", "w", "write", ("alpha", "beta"))
    assert visibility.upload_collection(one, None) == "alpha"
    assert visibility.upload_collection(None, None) == "default"
    assert visibility.upload_collection(two, "beta") == "beta"
    with pytest.raises(InvalidRequest, match="say which"):
        visibility.upload_collection(two, None)
    with pytest.raises(visibility.NotFound, match=r"collection .bravo. does not exist"):
        visibility.upload_collection(one, "bravo")


async def test_bad_collection_names_are_refused(store: EventStore) -> None:
    with pytest.raises(InvalidRequest):
        await tokens.create(store, "x", "read", actor="test", collections=["Not Valid!"])
    token_id, _token = await tokens.create(store, "x", "read", actor="test", collections=["alpha", "alpha"])
    assert token_id


async def test_cli_creates_a_token_for_collections(dsn: str) -> None:
    cli = Cli(cli_env(DATABASE_URL=dsn))
    made = (await cli("tokens", "create", "hr-bot", "--scope", "read", "--collection", "hr", "--collection",
                      "finance", "--json")).json()  # fmt: skip
    assert made["token"].startswith("chr_") and made["scope"] == "read"
    assert made["collections"] == ["hr", "finance"]
    whole = (await cli("tokens", "create", "ops", "--scope", "admin", "--json")).json()
    assert whole["collections"] is None
    listed = {t["token_id"]: t for t in (await cli("tokens", "list", "--json")).json()}
    assert listed[made["token_id"]]["collections"] == ["hr", "finance"]
    assert listed[whole["token_id"]]["collections"] is None
    text = (await cli("tokens", "list")).out
    assert "hr,finance" in text and made["token"] not in text
    bad = await cli("tokens", "create", "x", "--scope", "read", "--collection", "BAD NAME", ok=False)
    assert bad.code != 0 and "Traceback" not in bad.err and bad.err.strip()
