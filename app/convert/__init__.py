"""The convert stage: a file in, a DoclingDocument (JSON) and its Markdown out, or a clear failure.

Local Docling runs in warm child processes with a per-document timeout and memory cap (``local``);
the deployed Modal converter (``app/modal_app.py``, ``container``) runs the standard pipeline on a GPU
for the PDFs that need it, in batched calls (``batcher``, ``modal_client``) with a fallback to local
when Modal is unavailable (``backends``); time/memory failures are retried in page slices or on the
other backend (``recovery``). ``billing`` and ``quote`` read and write costs; nothing else here writes
events or touches the database.
"""

from app.convert.backends import convert_batch, convert_file
from app.convert.errors import ConversionFailure
from app.convert.options import ConversionOutput, ConvertOptions, docling_version
from app.convert.recovery import convert_with_recovery
from app.convert.sniff import SUPPORTED_MEDIA_TYPES, sniff_media_type, sniff_path

__all__ = [
    "SUPPORTED_MEDIA_TYPES",
    "ConversionFailure",
    "ConversionOutput",
    "ConvertOptions",
    "convert_batch",
    "convert_file",
    "convert_with_recovery",
    "docling_version",
    "sniff_media_type",
    "sniff_path",
]
