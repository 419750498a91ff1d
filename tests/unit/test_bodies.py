"""The API's bodies are types (app/api/bodies.py): the OpenAPI components are generated from them, and
a handler's body that does not match its type is refused instead of drifting from the document."""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from app.api import bodies
from app.api.openapi import document
from app.catalogue.state import DocumentState, Status
from app.services.documents import state_json


def test_every_reference_of_the_document_is_a_generated_component() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    refs = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(doc)))
    assert refs and refs <= set(schemas)
    assert schemas["Intake"]["required"] == ["document_id", "created", "filename", "media_type", "size", "sha256",
                                             "position"]  # fmt: skip


def test_a_body_off_its_type_is_refused() -> None:
    intake = {"document_id": "d", "created": True, "filename": "a.md", "media_type": "text/markdown", "size": 1,
              "sha256": "s", "position": 3}  # fmt: skip
    assert bodies.typed(bodies.Intake, intake)["revision"] == 1
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        bodies.typed(bodies.Intake, {**intake, "secret": "x"})
    with pytest.raises(msgspec.ValidationError, match="size"):
        bodies.typed(bodies.Intake, {**intake, "size": "big"})


def test_a_document_view_fits_its_type() -> None:
    state = DocumentState(document_id="00000000-0000-0000-0000-000000000001", filename="a.md", status=Status.FAILED)
    out = bodies.typed(bodies.Document, state_json(state))
    assert out["status"] == "failed" and out["searchable"] is False
