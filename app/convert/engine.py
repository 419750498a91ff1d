"""Docling itself, in-process. Imported only where conversion runs: the local converter processes
(preloaded once by the fork server, see ``local.py``) and the Modal container. Never in the service.

Importing this module imports Docling (and torch), which takes seconds; it also switches the Hugging
Face hub offline so a missing model fails at once instead of hanging on a download.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads its constants

import pypdfium2  # type: ignore[import-untyped]
from docling.datamodel.base_models import ConversionStatus, DocumentStream, FailureCategory, InputFormat
from docling.datamodel.pipeline_options import (
    LayoutObjectDetectionOptions,
    NativePdfPipelineOptions,
    PdfPipelineOptions,
)
from docling.document_converter import DocumentConverter, FormatOption, NativePdfFormatOption, PdfFormatOption
from docling.pipeline.standard_pdf_pipeline import StandardPdfPipeline
from docling_core.types.doc import DoclingDocument

from app.convert import errors
from app.convert.options import docling_version
from app.convert.sniff import CSV, DOCX, HTML, MARKDOWN, PDF, PPTX, TEXT, XLSX, extension_for

log = logging.getLogger(__name__)

FORMATS: dict[str, InputFormat] = {
    PDF: InputFormat.PDF,
    DOCX: InputFormat.DOCX,
    PPTX: InputFormat.PPTX,
    XLSX: InputFormat.XLSX,
    HTML: InputFormat.HTML,
    MARKDOWN: InputFormat.MD,
    TEXT: InputFormat.MD,
    CSV: InputFormat.CSV,
}
_IMAGE_PLACEHOLDER = "<!-- image -->"


@dataclass
class EngineResult:
    docling_json: bytes
    markdown: str
    page_count: int
    pipeline: str
    convert_s: float
    docling_version: str = field(default_factory=docling_version)
    warnings: list[str] = field(default_factory=list)


def layout_model_dirs() -> list[Path]:
    """Where the standard pipeline's layout model would be found (artifacts path, Hugging Face cache)."""
    repo = LayoutObjectDetectionOptions().model_spec.repo_id
    dirs = []
    artifacts = os.environ.get("DOCLING_ARTIFACTS_PATH")  # also in the Modal container: no app.config there
    if artifacts:
        dirs.append(Path(artifacts).expanduser() / repo.replace("/", "--"))
    from huggingface_hub import constants

    dirs.append(Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots")
    return dirs


def models_present() -> bool:
    return any(d.is_dir() and any(d.iterdir()) for d in layout_model_dirs())


class Engine:
    """Docling converters built once per process and reused for every document.

    ``standard_options``: the standard PDF pipeline's options (the Modal container passes its GPU
    settings, see ``app/modal_app.py``); ``document_timeout``: Docling's own per-document limit. A
    document Docling stops at that limit comes back ``PARTIAL_SUCCESS`` and truncated: ``convert``
    raises ``Timeout`` for it (retryable, so the recovery ladder converts it in page slices).
    """

    def __init__(self, standard_options: Any = None, document_timeout: float | None = None) -> None:
        self._converters: dict[str, DocumentConverter] = {}
        self.document_timeout = document_timeout
        self._standard_options = standard_options
        if standard_options is not None and document_timeout is not None:
            standard_options.document_timeout = document_timeout

    def converter(self, pdf_pipeline: str) -> DocumentConverter:
        if pdf_pipeline not in self._converters:
            pdf_option: FormatOption
            if pdf_pipeline == "standard":
                options = self._standard_options or PdfPipelineOptions(document_timeout=self.document_timeout)
                pdf_option = PdfFormatOption(pipeline_cls=StandardPdfPipeline, pipeline_options=options)
            else:
                # No page renders or picture bitmaps: search needs text, and on the corpus this made
                # native conversion 3.4x faster and its JSON 22x smaller (same Markdown).
                pdf_option = NativePdfFormatOption(
                    pipeline_options=NativePdfPipelineOptions(
                        generate_page_images=False,
                        generate_picture_images=False,
                        document_timeout=self.document_timeout,
                    )
                )
            conv = DocumentConverter(
                allowed_formats=sorted(set(FORMATS.values()), key=lambda f: f.value),
                format_options={InputFormat.PDF: pdf_option},
            )
            if pdf_pipeline == "standard":
                conv.initialize_pipeline(InputFormat.PDF)  # loads the models now: fails fast if absent
            self._converters[pdf_pipeline] = conv
        return self._converters[pdf_pipeline]

    def warm_up(self) -> None:
        self.converter("native")

    def convert(
        self,
        path: Path,
        media_type: str,
        pipeline: str = "default",
        page_range: tuple[int, int] | None = None,
        on_inspected: Callable[[int | None], None] | None = None,
    ) -> EngineResult:
        """Convert one file; raises ``ConversionFailure`` with a clear class and message."""
        if media_type not in FORMATS:
            raise errors.ConversionFailure(
                errors.UNSUPPORTED_MEDIA_TYPE, f"{media_type} is not a format Chronos converts", retryable=False
            )
        data = path.read_bytes()
        if not data:
            raise errors.ConversionFailure(errors.EMPTY_FILE, "the file is empty (0 bytes)", retryable=False)
        page_count: int | None = None
        pdfium_error: str | None = None
        pdf_pipeline = "simple"
        if media_type == PDF:
            page_count, pdfium_error = inspect_pdf(data)
            if on_inspected is not None:
                on_inspected(page_count)
            pdf_pipeline = self._pdf_pipeline(pipeline)
        warnings: list[str] = []
        start = time.perf_counter()
        try:
            result = self._run(data, media_type, pdf_pipeline if media_type == PDF else "native", page_range)
        except errors.ConversionFailure as failure:
            if pipeline != "default" or failure.error_class != errors.MODELS_UNAVAILABLE:
                raise
            warnings.append(f"standard pipeline unavailable, used native: {failure.message}")
            pdf_pipeline = "native"
            result = self._run(data, media_type, "native", page_range)
        convert_s = time.perf_counter() - start
        messages = [e.error_message for e in result.errors]
        if memory_exhausted(messages):
            # Under an address-space cap docling-parse fails page by page with std::bad_alloc and
            # Docling reports PARTIAL_SUCCESS: a silently truncated document, never accepted.
            failed = sum(1 for m in messages if memory_exhausted([m]))
            raise errors.ConversionFailure(
                errors.MEMORY_LIMIT,
                f"Docling ran out of memory on {failed} page(s) ({messages[0][:160]})",
                page_count=page_count,
            )
        if result.status == ConversionStatus.FAILURE or result.document is None:
            raise _failure_for(media_type, messages, pdfium_error, page_count)
        if result.status == ConversionStatus.PARTIAL_SUCCESS and timed_out(result):
            # Docling stopped at ``document_timeout`` and returned what it had: a truncated document,
            # never a conversion. Retryable: the ladder tries the other backend, then page slices.
            done = result.document.num_pages() if media_type == PDF else 0
            of = f" after {done} of {_expected_pages(page_count, page_range)} pages" if page_count else ""
            raise errors.ConversionFailure(
                errors.TIMEOUT,
                f"Docling stopped at its document timeout ({self.document_timeout or 0:g} s){of}; "
                "a truncated document is not accepted",
                page_count=page_count,
            )
        if result.status != ConversionStatus.SUCCESS:
            warnings.extend(f"{result.status.value}: {m}" for m in messages)
        doc = result.document
        if media_type == PDF and page_count and doc.num_pages() < _expected_pages(page_count, page_range):
            warnings.append(f"converted {doc.num_pages()} of {_expected_pages(page_count, page_range)} pages")
        markdown = doc.export_to_markdown()
        if not markdown.replace(_IMAGE_PLACEHOLDER, "").strip():
            pages = f" on {doc.num_pages()} page(s)" if media_type == PDF else ""
            hint = (
                "; the native PDF pipeline does not run OCR: convert it with the standard pipeline "
                "(Modal, or local models via DOCLING_ARTIFACTS_PATH)"
                if media_type == PDF and pdf_pipeline == "native"
                else ""
            )
            raise errors.ConversionFailure(
                errors.NO_TEXT, f"Docling found no text{pages}{hint}", retryable=False, page_count=page_count
            )
        return EngineResult(
            docling_json=json.dumps(doc.export_to_dict(), ensure_ascii=False).encode("utf-8"),
            markdown=markdown,
            page_count=doc.num_pages(),
            pipeline=pdf_pipeline,
            convert_s=convert_s,
            warnings=warnings,
        )

    def _pdf_pipeline(self, pipeline: str) -> str:
        if pipeline == "native":
            return "native"
        present = models_present()
        if pipeline == "standard" and not present and os.environ.get("HF_HUB_OFFLINE") == "1":
            looked = ", ".join(str(d) for d in layout_model_dirs())
            raise errors.ConversionFailure(
                errors.MODELS_UNAVAILABLE,
                "the standard PDF pipeline needs Docling's layout and table models, which are not on this "
                f"machine (looked in {looked}) and will not be downloaded here; run `docling-tools models "
                "download` and set DOCLING_ARTIFACTS_PATH, or use pipeline 'native' or the Modal backend",
                retryable=False,
            )
        return "standard" if present or pipeline == "standard" else "native"

    def _run(self, data: bytes, media_type: str, pdf_pipeline: str, page_range: tuple[int, int] | None) -> Any:
        kwargs: dict[str, Any] = {"raises_on_error": False}
        if page_range is not None:
            kwargs["page_range"] = page_range
        # A stream named by the sniffed type: Docling never sees the uploaded (possibly lying) name.
        source = DocumentStream(name=f"document.{extension_for(media_type)}", stream=io.BytesIO(data))
        try:
            converter = self.converter(pdf_pipeline)
            return converter.convert(source, **kwargs)
        except errors.ConversionFailure:
            raise
        except MemoryError as exc:
            raise errors.ConversionFailure(
                errors.MEMORY_LIMIT, "Docling ran out of memory (address-space cap reached)"
            ) from exc
        except Exception as exc:
            if _is_missing_model(exc):
                raise errors.ConversionFailure(
                    errors.MODELS_UNAVAILABLE,
                    f"Docling's models are not available offline ({type(exc).__name__}: {str(exc)[:300]}); "
                    "run `docling-tools models download` and set DOCLING_ARTIFACTS_PATH",
                    retryable=False,
                ) from exc
            raise errors.ConversionFailure(
                errors.DOCLING_ERROR, f"Docling failed: {type(exc).__name__}: {str(exc)[:500]}", retryable=False
            ) from exc

    def merge(self, json_docs: list[bytes]) -> tuple[bytes, str, int]:
        """One DoclingDocument from slices converted separately (page numbers are kept)."""
        docs = [DoclingDocument.model_validate_json(d) for d in json_docs]
        merged = DoclingDocument.concatenate(docs)
        markdown = merged.export_to_markdown()
        return json.dumps(merged.export_to_dict(), ensure_ascii=False).encode("utf-8"), markdown, merged.num_pages()


def inspect_pdf(data: bytes) -> tuple[int | None, str | None]:
    """(page count, PDFium's complaint) before Docling runs; a password-protected PDF fails here."""
    try:
        pdf = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower():
            raise errors.ConversionFailure(
                errors.PASSWORD_PROTECTED,
                f"the PDF is encrypted with a password ({message}); remove the protection "
                "(e.g. `qpdf --decrypt --password=… in.pdf out.pdf`) and upload it again",
                retryable=False,
            ) from exc
        return None, message
    try:
        return len(pdf), None
    finally:
        pdf.close()


def _failure_for(
    media_type: str, messages: list[str], pdfium_error: str | None, page_count: int | None
) -> errors.ConversionFailure:
    detail = "; ".join(dict.fromkeys(messages))[:600] or "no error details from Docling"
    if media_type == PDF and (pdfium_error or "truncated or damaged" in detail or "could not load" in detail):
        reason = f"PDFium: {pdfium_error}; " if pdfium_error else ""
        return errors.ConversionFailure(
            errors.CORRUPT_PDF,
            f"the PDF is truncated or damaged and cannot be read ({reason}Docling: {detail}); upload an intact copy",
            retryable=False,
            page_count=page_count,
        )
    return errors.ConversionFailure(
        errors.DOCLING_ERROR,
        f"Docling could not convert the document: {detail}",
        retryable=False,
        page_count=page_count,
    )


def timed_out(result: Any) -> bool:
    """Docling recorded that it stopped at ``document_timeout`` (errors of category TIMEOUT)."""
    return any(getattr(e, "category", None) == FailureCategory.TIMEOUT for e in result.errors)


_MEMORY_MARKERS = ("std::bad_alloc", "MemoryError", "Cannot allocate memory", "out of memory")


def memory_exhausted(messages: list[str]) -> bool:
    return any(marker in m for m in messages for marker in _MEMORY_MARKERS)


def _expected_pages(page_count: int, page_range: tuple[int, int] | None) -> int:
    if page_range is None:
        return page_count
    return max(0, min(page_range[1], page_count) - page_range[0] + 1)


def _is_missing_model(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc))
    return bool(
        names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}
        or "outgoing traffic has been disabled" in text
        or "HF_HUB_OFFLINE" in text
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
