"""Conversion failures: one exception type carrying an error class, a clear message and whether a
retry can help. The pipeline turns it into a ``ConversionFailed`` event."""

from __future__ import annotations

from typing import Any

# Error classes (the ``error_class`` of ConversionFailed). Retryable ones may succeed another time or
# another way (in page slices, on the other backend); the others are properties of the input.
EMPTY_FILE = "EmptyFile"
UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
PASSWORD_PROTECTED = "PasswordProtected"
CORRUPT_PDF = "CorruptPdf"
NO_TEXT = "NoExtractableText"
MODELS_UNAVAILABLE = "ModelsUnavailable"
TIMEOUT = "Timeout"
MEMORY_LIMIT = "MemoryLimit"
CRASHED = "ConverterCrashed"
DOCLING_ERROR = "DoclingError"
MODAL_ERROR = "ModalError"
NESTING_TOO_DEEP = "NestingTooDeep"  # HTML Docling cannot walk (app.convert.guards)
EXPANDS_TOO_LARGE = "ExpandsTooLarge"  # an Office package that unpacks past its limit (a ZIP bomb)

RETRYABLE = frozenset({TIMEOUT, MEMORY_LIMIT})
RESOURCE_LIMITS = frozenset({TIMEOUT, MEMORY_LIMIT})


class ConversionFailure(Exception):
    """A document could not be converted; ``message`` says what failed and what to do."""

    def __init__(
        self,
        error_class: str,
        message: str,
        *,
        retryable: bool | None = None,
        backend: str | None = None,
        page_count: int | None = None,
        final: bool = False,
        attempts: list[str] | None = None,
    ) -> None:
        super().__init__(f"{error_class}: {message}")
        self.error_class = error_class
        self.message = message
        self.retryable = error_class in RETRYABLE if retryable is None else retryable
        self.backend = backend
        self.page_count = page_count  # when known (PDFs are inspected before conversion)
        self.final = final  # True when the recovery policy has nothing left to try
        self.attempts = list(attempts or [])
        self.fallback: dict[str, str] | None = None  # set when Modal was unavailable and local failed
        # Modal container time this document was billed for on the way to this failure
        # (app.convert.options.ModalUsage), so the failure event carries its cost lines.
        self.modal_usage: list[Any] = []
        self.held_s = 0.0  # time a local converter process was held before this failure (0: unknown)

    def to_dict(self) -> dict[str, object]:
        return {
            "error_class": self.error_class,
            "message": self.message,
            "retryable": self.retryable,
            "backend": self.backend,
            "page_count": self.page_count,
            "final": self.final,
            "attempts": self.attempts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object], backend: str | None = None) -> ConversionFailure:
        page_count = data.get("page_count")
        retryable = data.get("retryable")
        return cls(
            str(data.get("error_class") or DOCLING_ERROR),
            str(data.get("message") or "conversion failed without a message"),
            retryable=bool(retryable) if retryable is not None else None,
            backend=backend or (str(data["backend"]) if data.get("backend") else None),
            page_count=int(page_count) if isinstance(page_count, int) else None,
        )
