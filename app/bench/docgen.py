"""Generated large inputs for ``chronos bench large``: written at run time into a temp folder, never
committed. Text is pseudo-random but readable-ish words (deterministic for a seed), so conversion,
chunking and embedding have real work to do.

* ``make_long_pdf``: an N-page text PDF (heading + paragraphs per page), built with fpdf2.
* ``make_heavy_pdf``: a PDF of about N MB: a few pages, each with text and a large incompressible
  JPEG (random noise), so the upload is big while the text stays small.
* ``make_markdown``: about N MB of Markdown (sections and paragraphs), written in pieces.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

WORDS = tuple(
    " ".join(
        [
            "ledger event stream chunk vector archive replay worker lease converter page table heading figure",
            "document search token model embedding cost provider storage index query snapshot commit position",
            "projection migration schema batch queue retry failure timeout memory process signal network river",
            "mountain harbour lantern orchard meadow quarry beacon compass glacier tundra canyon delta prairie",
        ]
    ).split(" ")
)


def sentence(rng: random.Random, n: int | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(n or rng.randint(8, 18))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def make_long_pdf(
    path: Path, pages: int, *, seed: int = 7, paragraphs: int = 3, progress: Callable[[int], object] | None = None
) -> Path:
    """A text PDF with exactly ``pages`` pages (one section per page)."""
    from fpdf import FPDF

    rng = random.Random(seed)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(20, 20, 20)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 9, f"Section {number}: {sentence(rng, 4)[:-1]}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        for _ in range(paragraphs):
            pdf.multi_cell(0, 5.5, paragraph(rng, 4), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
        pdf.set_y(-15)
        pdf.set_font("Helvetica", size=8)
        pdf.cell(0, 5, f"page {number} of {pages}", align="C")
        if progress is not None:
            progress(1)
    pdf.output(str(path))
    return path


def _noise_jpeg(rng: random.Random, side: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_heavy_pdf(
    path: Path,
    megabytes: int,
    *,
    seed: int = 11,
    image_side: int = 2048,
    progress: Callable[[int], object] | None = None,
) -> Path:
    """A PDF of at least ``megabytes`` MB: pages of text, each with a large noise JPEG."""
    from fpdf import FPDF

    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    written = 0
    number = 0
    while written < target:
        number += 1
        image = _noise_jpeg(rng, image_side)
        written += len(image)
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 14)
        pdf.multi_cell(0, 8, f"Plate {number}: {sentence(rng, 4)[:-1]}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 5.5, paragraph(rng, 3), new_x="LMARGIN", new_y="NEXT")
        pdf.image(io.BytesIO(image), x=20, y=70, w=170)
        if progress is not None:
            progress(len(image) // (1024 * 1024))
    pdf.output(str(path))
    return path


def make_markdown(
    path: Path, megabytes: int, *, seed: int = 13, progress: Callable[[int], object] | None = None
) -> Path:
    """About ``megabytes`` MB of Markdown, written a section at a time (never held whole)."""
    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    written = 0
    section = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            section += 1
            block = (
                f"## Section {section}: {sentence(rng, 4)[:-1]}\n\n"
                + "\n\n".join(paragraph(rng, 5) for _ in range(20))
                + "\n\n"
            )
            handle.write(block)
            before = written // (1024 * 1024)
            written += len(block.encode("utf-8"))
            if progress is not None and written // (1024 * 1024) > before:
                progress(written // (1024 * 1024) - before)
    return path
