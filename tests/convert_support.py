"""Test helpers around real local conversions: watch or bend what each converter call is given.

The conversions stay real (Docling in the converter process); a hook sees every call's arguments and
may hand the converter other options (a tiny time limit, to make a real attempt time out)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.convert import ConvertOptions
from app.convert.local import ConverterPool
from app.convert.options import ConversionOutput

PageRange = tuple[int, int] | None
Hook = Callable[[Path, str, ConvertOptions, PageRange, "threading.Event | None"], ConvertOptions]


def intercept_conversions(monkeypatch: pytest.MonkeyPatch, hook: Hook) -> None:
    """Every ``ConverterPool.convert`` call passes through ``hook``, which returns the options to use."""
    real = ConverterPool.convert

    def convert(
        self: ConverterPool,
        path: Path,
        media_type: str,
        options: ConvertOptions,
        page_range: PageRange = None,
        cancel: threading.Event | None = None,
    ) -> ConversionOutput:
        return real(self, path, media_type, hook(path, media_type, options, page_range, cancel), page_range, cancel)

    monkeypatch.setattr(ConverterPool, "convert", convert)


def timeout_above(monkeypatch: pytest.MonkeyPatch, tiny_s: float) -> Callable[[int], list[PageRange]]:
    """``install(pages)``: real conversions of more than ``pages`` pages (or whole files) get a
    ``tiny_s`` time limit, so they time out; returns the page ranges asked for, in order."""

    def install(pages: int) -> list[PageRange]:
        seen: list[PageRange] = []

        def hook(
            path: Path, media_type: str, options: ConvertOptions, page_range: PageRange, cancel: object
        ) -> ConvertOptions:
            seen.append(page_range)
            if page_range is None or page_range[1] - page_range[0] + 1 > pages:
                return dataclasses.replace(options, timeout_s=tiny_s)
            return options

        intercept_conversions(monkeypatch, hook)
        return seen

    return install
