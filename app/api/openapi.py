"""The OpenAPI 3.1 document of the API (served at ``/openapi.json``): the paths are written here, the
components (every body) are generated from the types in app/api/bodies.py that the handlers answer with.

Kept true by tests/test_api_openapi.py: every route of the app is documented, every documented
operation exists, and schemathesis checks that responses conform to these schemas.
"""

from __future__ import annotations

from typing import Any

from app.api.bodies import components

S = dict[str, Any]


def ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def string(**kw: Any) -> S:
    return {"type": "string", **kw}


def integer(**kw: Any) -> S:
    return {"type": "integer", **kw}


def obj(props: S, required: list[str] | None = None, **kw: Any) -> S:
    out: S = {"type": "object", "properties": props, **kw}
    if required:
        out["required"] = required
    return out


UUID = string(format="uuid")

ERROR_CODES = {
    "400": "Bad request (invalid parameter, body or id)",
    "401": "A bearer token is required",
    "403": "The bearer token is not valid",
    "404": "Not found",
    "409": "Conflict with the document's state",
    "410": "Gone (deleted)",
    "413": "Body larger than the limit",
    "415": "Unsupported document type",
    "422": "Unprocessable webhook",
    "431": "Request headers too large",
    "502": "Upstream (Directus) failure",
    "503": "Not ready / not configured",
}


def responses(ok: dict[str, S], *errors: str) -> S:
    out: S = dict(ok)
    for code in ("400", "431", *errors):
        out[code] = {"$ref": f"#/components/responses/E{code}"}
    out["500"] = {"$ref": "#/components/responses/E500"}
    return out


def json_ok(description: str, schema: S) -> S:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def qparam(name: str, schema: S, description: str) -> S:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


DOC_ID = {"name": "document_id", "in": "path", "required": True, "schema": UUID, "description": "Document id"}
READ: list[S] = [{}, {"bearerAuth": []}]
WRITE: list[S] = [{"bearerAuth": []}]

SCHEMAS: S = components()  # generated from the types the handlers answer with (app/api/bodies.py)

PATHS: S = {
    "/documents": {
        "post": {
            "operationId": "uploadDocument",
            "summary": "Upload a document (multipart field `file`, or the raw body with X-Filename)",
            "security": WRITE,
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": string(maxLength=255),
                    "description": "A retried request with the same key records nothing new",
                },
                {
                    "name": "X-Filename",
                    "in": "header",
                    "required": False,
                    "schema": string(),
                    "description": "Display name for a raw-body upload (percent-encoded)",
                },
                qparam(
                    "collection",
                    string(pattern="^[a-z0-9][a-z0-9_-]{0,62}$"),
                    "An existing collection (default: default); or the form field before `file`",
                ),
                qparam("metadata", string(), "A JSON object (at most 16 KB); or the form field before `file`"),
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": obj(
                            {"collection": string(), "metadata": string(), "file": string(format="binary")}, ["file"]
                        ),
                    },
                    "application/octet-stream": {"schema": string(format="binary")},
                },
            },
            "responses": responses(
                {
                    "202": json_ok("A new document was recorded", ref("Intake")),
                    "200": json_ok("The same content (or idempotency key) was uploaded before", ref("Intake")),
                },
                "401",
                "403",
                "404",
                "409",
                "413",
                "415",
                "422",
            ),
        },
        "get": {
            "operationId": "listDocuments",
            "summary": "Documents, newest first (the documents projection)",
            "security": READ,
            "parameters": [
                qparam("status", string(), "Comma-separated statuses to keep"),
                qparam("limit", integer(minimum=1, maximum=500, default=50), "Page size"),
                qparam("cursor", string(), "next_cursor of the previous page"),
            ],
            "responses": responses({"200": json_ok("A page of documents", ref("DocumentList"))}, "401", "403"),
        },
    },
    "/documents/{document_id}": {
        "get": {
            "operationId": "getDocument",
            "summary": "A document read from its stream: status, stages with timings, costs, errors",
            "security": READ,
            "parameters": [DOC_ID],
            "responses": responses({"200": json_ok("The document", ref("DocumentDetail"))}, "401", "403", "404"),
        },
        "delete": {
            "operationId": "deleteDocument",
            "summary": "Delete a document (appends DocumentDeleted)",
            "security": WRITE,
            "parameters": [DOC_ID],
            "requestBody": {"required": False, "content": {"application/json": {"schema": ref("DeleteRequest")}}},
            "responses": responses(
                {"200": json_ok("Deleted (or deleted already)", ref("Deleted"))}, "401", "403", "404", "409"
            ),
        },
    },
    "/documents/{document_id}/events": {
        "get": {
            "operationId": "documentEvents",
            "summary": "The document's stream",
            "security": READ,
            "parameters": [
                DOC_ID,
                qparam("after_version", integer(minimum=0), "Only events after this stream version"),
                qparam("limit", integer(minimum=1, maximum=10000, default=1000), "Page size"),
                qparam("data", string(enum=["full", "summary", "none"]), "How much of each event's data"),
            ],
            "responses": responses({"200": json_ok("Events", ref("DocumentEvents"))}, "401", "403", "404"),
        }
    },
    "/documents/{document_id}/revisions": {
        "get": {
            "operationId": "documentRevisions",
            "summary": "Every revision of the document: source, hash, stages, failure, cost, the serving one",
            "security": READ,
            "parameters": [DOC_ID],
            "responses": responses({"200": json_ok("Revisions", ref("DocumentRevisions"))}, "401", "403", "404"),
        }
    },
    "/documents/{document_id}/markdown": {
        "get": {
            "operationId": "documentMarkdown",
            "summary": "The latest conversion's Markdown",
            "security": READ,
            "parameters": [DOC_ID],
            "responses": responses(
                {"200": {"description": "Markdown", "content": {"text/markdown": {"schema": string()}}}},
                "401",
                "403",
                "404",
                "409",
                "410",
            ),
        }
    },
    "/documents/{document_id}/chunks": {
        "get": {
            "operationId": "documentChunks",
            "summary": "The current chunk set, by ordinal",
            "security": READ,
            "parameters": [
                DOC_ID,
                qparam("after", integer(minimum=-1), "Only chunks after this ordinal"),
                qparam("limit", integer(minimum=1, maximum=1000, default=100), "Page size"),
            ],
            "responses": responses({"200": json_ok("Chunks", ref("ChunkList"))}, "401", "403", "404"),
        }
    },
    "/documents/{document_id}/reprocess": {
        "post": {
            "operationId": "reprocessDocument",
            "summary": "Run a stage again (appends a *Requested event); the dashboard's retry button",
            "security": WRITE,
            "parameters": [DOC_ID],
            "requestBody": {"required": False, "content": {"application/json": {"schema": ref("ReprocessRequest")}}},
            "responses": responses({"202": json_ok("Requested", ref("Reprocess"))}, "401", "403", "404", "409"),
        }
    },
    "/documents/{document_id}/metadata": {
        "patch": {
            "operationId": "updateDocumentMetadata",
            "summary": "New metadata (merge: top-level keys replace, null removes; replace: the whole object); "
            "no re-conversion, no model call",
            "security": WRITE,
            "parameters": [DOC_ID, qparam("mode", string(enum=["merge", "replace"]), "merge (default) or replace")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": responses(
                {"200": json_ok("Recorded", ref("MetadataChange"))}, "401", "403", "404", "409", "422"
            ),
        }
    },
    "/collections": {
        "get": {
            "operationId": "listCollections",
            "summary": "Collections with their live document counts",
            "security": READ,
            "responses": responses({"200": json_ok("Collections", ref("CollectionList"))}, "401", "403"),
        },
        "post": {
            "operationId": "createCollection",
            "summary": "Create a collection (admin)",
            "security": WRITE,
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("CollectionCreate")}}},
            "responses": responses({"201": json_ok("Created", ref("Collection"))}, "401", "403", "409"),
        },
    },
    "/collections/{collection}/stats": {
        "get": {
            "operationId": "collectionStats",
            "summary": "Documents by status, chunks, vectors, bytes and this month's spend of a collection",
            "security": READ,
            "parameters": [{"name": "collection", "in": "path", "required": True, "schema": string()}],
            "responses": responses({"200": json_ok("Figures", ref("CollectionStats"))}, "401", "403", "404"),
        }
    },
    "/events": {
        "get": {
            "operationId": "listEvents",
            "summary": "The global feed in delivery order (tx_id, position): gap-free paging",
            "security": READ,
            "parameters": [
                qparam("after", string(), "Cursor TX-POSITION (an event's cursor or next), a position, or now"),
                qparam("limit", integer(minimum=1, maximum=1000, default=100), "Page size"),
                qparam("types", string(), "Comma-separated event types to keep"),
                qparam("data", string(enum=["full", "summary", "none"]), "How much of each event's data"),
            ],
            "responses": responses({"200": json_ok("A page of events", ref("EventList"))}, "401", "403"),
        }
    },
    "/events/stream": {
        "get": {
            "operationId": "streamEvents",
            "summary": "Server-Sent Events: live tail, resumable with Last-Event-ID, heartbeat comments",
            "security": READ,
            "x-streaming": True,
            "parameters": [
                qparam("after", string(), "Start after this cursor (default: now)"),
                qparam("types", string(), "Comma-separated event types to keep"),
                qparam("data", string(enum=["full", "summary", "none"]), "How much of each event's data"),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": string(),
                    "description": "The id of the last message received; the stream resumes after it",
                },
            ],
            "responses": responses(
                {
                    "200": {
                        "description": "text/event-stream; each message's id is the event's cursor and its data "
                        "the event as JSON",
                        "content": {"text/event-stream": {"schema": string()}},
                    }
                },
                "401",
                "403",
            ),
        }
    },
    "/search": {
        "get": {
            "operationId": "search",
            "summary": "Search the chunks: hybrid (full text + vectors, fused by reciprocal rank), vector or text",
            "security": READ,
            "parameters": [
                {
                    "name": "q",
                    "in": "query",
                    "required": True,
                    "schema": string(minLength=1, maxLength=4000),
                    "description": "The question",
                },
                qparam("k", integer(minimum=1, maximum=100, default=5), "How many hits"),
                qparam(
                    "mode",
                    {"type": "string", "enum": ["hybrid", "vector", "text"], "default": "hybrid"},
                    "hybrid (default), vector, or text (no embedding)",
                ),
                qparam("as_of", string(), "Answer with the chunks current at this ISO timestamp or log position"),
                qparam("document_id", {"type": "array", "items": UUID}, "Only these documents (repeat the parameter)"),
                qparam("filename", string(), "Only files whose name matches this glob (* and ?), case-insensitive"),
                qparam("media_type", {"type": "array", "items": string()}, "Only these media types (repeatable)"),
                qparam("source", {"type": "array", "items": string()}, "Only these sources (repeatable)"),
                qparam("uploaded_from", string(), "Only documents uploaded at or after (ISO date or timestamp)"),
                qparam("uploaded_to", string(), "Only documents uploaded before (ISO date or timestamp)"),
                qparam("collection", {"type": "array", "items": string()}, "Only these collections (repeatable)"),
                qparam(
                    "meta",
                    {"type": "array", "items": string()},
                    "Metadata filter, repeatable, all must hold: KEY=VALUE (text equality) or a JSON object the "
                    'metadata must contain ({"tags": ["hr"]})',
                ),
            ],
            "responses": responses({"200": json_ok("Hits, best first", ref("SearchResult"))}, "401", "403", "422"),
        }
    },
    "/costs": {
        "get": {
            "operationId": "costs",
            "summary": "Spend per day from the cost ledger, and the month against the budget",
            "security": READ,
            "parameters": [
                qparam("from", string(format="date"), "First day (default: the first of this month)"),
                qparam("to", string(format="date"), "Last day, inclusive (default: today)"),
                qparam("collection", string(), "Only this collection's spend and budget"),
            ],
            "responses": responses({"200": json_ok("Costs", ref("Costs"))}, "401", "403", "404"),
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "The process is up",
            "security": [{}],
            "responses": responses({"200": json_ok("Up", ref("Health"))}),
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "The database answers and a stage worker is connected",
            "security": [{}],
            "responses": responses(
                {"200": json_ok("Ready", ref("Ready")), "503": json_ok("Not ready; checks say why", ref("Ready"))}
            ),
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (events, stage durations, queue depth, failures, spend)",
            "security": READ,
            "responses": responses(
                {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": string()}}}},
                "401",
                "403",
            ),
        }
    },
    "/hooks/directus": {
        "post": {
            "operationId": "directusHook",
            "summary": "Directus Flow webhook (files.upload/update/delete): a new revision, or a deletion",
            "security": WRITE,
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("DirectusWebhook")}}},
            "responses": responses(
                {
                    "202": json_ok("Ingested as new document(s)", ref("DirectusResult")),
                    "200": json_ok(
                        "Known already, or an event other than files.upload (ignored)", ref("DirectusResult")
                    ),
                },
                "401",
                "403",
                "409",
                "413",
                "415",
                "422",
                "502",
                "503",
            ),
        }
    },
    "/": {
        "get": {
            "operationId": "dashboard",
            "summary": "The dashboard (HTML)",
            "security": [{}],
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": string()}}}},
        }
    },
    "/static/{path}": {
        "get": {
            "operationId": "static",
            "summary": "Dashboard assets",
            "security": [{}],
            "parameters": [{"name": "path", "in": "path", "required": True, "schema": string()}],
            "responses": {
                "200": {"description": "A file", "content": {"*/*": {"schema": string()}}},
                "404": {"$ref": "#/components/responses/E404"},
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [{}],
            "responses": {"200": json_ok("OpenAPI 3.1", obj({}))},
        }
    },
}


def document() -> S:
    error_responses = {
        f"E{code}": {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
        for code, text in {**ERROR_CODES, "500": "Internal error (no details; see the server log)"}.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Chronos Ingest API",
            "version": "1",
            "description": "Event-sourced document ingestion. Errors are always "
            '{"error": {"code", "message"}}. Writes need Authorization: Bearer <token> (CHRONOS_API_TOKENS); '
            "reads too when CHRONOS_API_READ_AUTH=1.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": error_responses,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
