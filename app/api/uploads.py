"""Upload bodies as streams of bytes: raw (``X-Filename`` header) or multipart (field ``file``).

Multipart is parsed incrementally (python-multipart's push parser): bytes of the ``file`` part are
handed on as they arrive, so an upload of any size passes through in pieces of at most the
client's chunk size and lands in the blob store without ever being held whole, in memory or on disk.
The form fields ``collection`` and ``metadata`` (docs/collections.md) are read when they come before the
``file`` part (the file is streamed, so what follows it is known only once it is stored): one that comes
after it refuses the upload.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from urllib.parse import unquote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.api.errors import ApiError

FILE_FIELD = "file"
FORM_FIELDS = ("collection", "metadata")  # read from parts before the file part
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_FIELD_BYTES = 64 * 1024  # a form field's value (metadata is limited to 16 KB after parsing)


@dataclass
class UploadBody:
    filename: str | None
    declared_media_type: str | None
    chunks: AsyncIterator[bytes]
    fields: dict[str, str] = dataclasses.field(default_factory=dict)  # FORM_FIELDS given before the file


def filename_from_headers(request: Request) -> str | None:
    """``X-Filename`` (percent-decoded), else the filename of ``Content-Disposition``."""
    raw = request.headers.get("x-filename")
    if raw:
        return unquote(raw)
    disposition = request.headers.get("content-disposition")
    return disposition_filename(disposition.encode("latin-1")) if disposition else None


def disposition_filename(header: bytes) -> str | None:
    """The filename of a ``Content-Disposition`` header (of the request or of a multipart part).

    ``filename*=charset''percent-encoded`` (RFC 5987 / RFC 6266, and RFC 2231 continuations) wins
    over a plain ``filename`` when both are given, as RFC 6266 says; a plain ``filename`` is taken as
    the raw UTF-8 that browsers send (falling back to Latin-1). python-multipart's own parser drops
    every ``name*`` parameter (RFC 7578 forbids them in forms), so the standard library's RFC 2231
    decoder reads the header here."""
    message = Message()
    message["content-disposition"] = header.decode("latin-1")
    plain: str | None = None
    for key, value in message.get_params(header="content-disposition", failobj=[]):
        if key.lower() != "filename":
            continue
        if isinstance(value, tuple):  # filename*: (charset, language, percent-decoded bytes as Latin-1)
            charset, _language, text = value
            try:
                encoding = codecs.lookup(charset or "utf-8").name
            except LookupError:  # an unknown charset: the bytes as UTF-8
                encoding = "utf-8"
            return str(text).encode("latin-1", "replace").decode(encoding, "replace")
        if plain is None:
            raw = collapse_rfc2231_value(value).encode("latin-1", "replace")
            try:
                plain = raw.decode("utf-8")
            except UnicodeDecodeError:
                plain = raw.decode("latin-1")
    return plain


async def open_upload(request: Request) -> UploadBody:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_request", "multipart/form-data without a boundary")
        part = _MultipartFile(request, boundary)
        await part.start()
        return UploadBody(part.filename, part.content_type, part.chunks(), part.fields)
    declared = content_type.decode("latin-1") or None
    if declared in ("application/octet-stream", "application/x-www-form-urlencoded"):
        declared = None
    return UploadBody(filename_from_headers(request), declared, request.stream())


class _MultipartFile:
    """Pulls the request body through a push parser until the ``file`` part, then streams its data."""

    def __init__(self, request: Request, boundary: bytes) -> None:
        self.body = request.stream()
        self.filename: str | None = None
        self.content_type: str | None = None
        self._pending: list[bytes] = []
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._in_file = False
        self._field_name: str | None = None  # a FORM_FIELDS part being read
        self._field_value = bytearray()
        self.fields: dict[str, str] = {}
        self._found = False
        self._file_done = False
        self._ended = False
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    # --- parser callbacks ------------------------------------------------------------------
    def _part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]
        self._grow(end - start)

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self._grow(end - start)

    def _grow(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(431, "headers_too_large", "multipart part headers are too large")

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = b""
        self._value = b""

    def _headers_finished(self) -> None:
        _kind, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("latin-1")
        if name in FORM_FIELDS:
            if self._found:
                raise ApiError(400, "bad_request", f"the form field {name!r} must come before the {FILE_FIELD!r} "
                               "part (the file is streamed as it arrives); nothing was recorded")  # fmt: skip
            if name in self.fields:
                raise ApiError(400, "bad_request", f"the form field {name!r} is given twice")
            self._field_name = name
            self._field_value = bytearray()
        if name == FILE_FIELD and not self._found:
            self._found = self._in_file = True
            self.filename = disposition_filename(self._headers.get(b"content-disposition", b""))
            declared, _ = parse_options_header(self._headers.get(b"content-type", b""))
            self.content_type = declared.decode("latin-1") or None
            if self.content_type == "application/octet-stream":
                self.content_type = None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))
        elif self._field_name is not None:
            self._field_value.extend(data[start:end])
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"the form field {self._field_name!r} is larger than {MAX_FIELD_BYTES} bytes",
                )

    def _part_end(self) -> None:
        if self._field_name is not None:
            try:
                self.fields[self._field_name] = self._field_value.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "bad_request", f"the form field {self._field_name!r} is not UTF-8 text") from None
            self._field_name = None
        if self._in_file:
            self._in_file = False
            self._file_done = True

    def _end(self) -> None:
        self._ended = True

    # --- driving ---------------------------------------------------------------------------
    def _feed(self, piece: bytes) -> None:
        try:
            self.parser.write(piece)
        except MultipartParseError as exc:
            raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from exc

    async def start(self) -> None:
        """Read until the headers of the ``file`` part are known (or the body ends without one)."""
        async for piece in self.body:
            self._feed(piece)
            if self._found:
                return
        raise ApiError(400, "bad_request", f"multipart body has no '{FILE_FIELD}' field")

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._pending:
                data = b"".join(self._pending)
                self._pending.clear()
                yield data
            if self._file_done:
                break
            try:
                piece = await self.body.__anext__()
            except StopAsyncIteration:
                raise ApiError(400, "bad_request", "the multipart body ended inside the file part") from None
            self._feed(piece)
        # Read (and discard) the rest of the body so the connection stays usable.
        async for piece in self.body:
            self._feed(piece)
