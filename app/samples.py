"""A small sample set of Chronos's own, written on demand (``chronos sample DIR``): for a first run on a
machine that has no corpus. Nothing binary is kept in git; the PDF and the DOCX are built here from
their text, in a few lines each, with only the standard library.

Six documents, one of each kind Chronos converts, about computing history and about Chronos itself,
so ``chronos search "In which year was IBM founded?"`` (the README's question) finds its answer.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

OVERVIEW = """# Chronos Ingest in one page

Chronos Ingest turns uploaded documents into searchable chunks and vectors in PostgreSQL.
Every step is an event in an append-only log; every table anyone reads is a projection of it.

## What happens to an upload

1. The bytes go to the blob store and a `DocumentUploaded` event is appended.
2. A worker converts the file with Docling (a GPU on Modal, or locally on the CPU).
3. LlamaIndex splits the text into chunks that fit the embedding model's window.
4. The chunks are embedded and the document becomes searchable.

## Why an event log

Any stage can be replayed for free (the tables are rebuilt from the log) or reprocessed with new
settings, and every dollar of GPU and API time is in the cost ledger.
"""

ABOUT = """About these samples

The chronos sample command wrote these six documents so that a first run needs no corpus of its own.
There is one of each kind Chronos converts: a PDF, a Word document, a web page, a Markdown file, a CSV
table and this plain text file. Ingest the folder and ask a question, for example: in which year was
IBM founded? The answer is in the web page and in the table.
"""

HISTORY_ROWS = [
    ("1890", "Herman Hollerith's punched-card tabulators count the United States census."),
    ("1911", "IBM is founded as the Computing-Tabulating-Recording Company (CTR), in New York."),
    ("1924", "CTR is renamed International Business Machines: IBM."),
    ("1946", "ENIAC, the first general-purpose electronic computer, is unveiled in Philadelphia."),
    ("1971", "Intel's 4004 puts a whole processor on one chip."),
    ("1989", "Tim Berners-Lee proposes the World Wide Web at CERN."),
]

HTML_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A short history of computing</title></head>
<body>
<h1>A short history of computing</h1>
<p>Computing grew out of office machinery: tabulators, time clocks and scales. The company that became
IBM was founded in 1911, when four such firms merged into the Computing-Tabulating-Recording Company.</p>
<h2>Milestones</h2>
<table>
<tr><th>Year</th><th>Event</th></tr>
{rows}
</table>
<h2>From cards to chips</h2>
<ul><li>Punched cards stored data for seventy years.</li><li>Transistors replaced vacuum tubes in the 1950s.</li>
<li>Integrated circuits made personal computers possible.</li></ul>
</body></html>
"""

PDF_PAGES = [
    [
        "Harbour operations report",
        "",
        "The harbour handled 1,240 vessels this quarter, eleven percent more than last year.",
        "Night arrivals rose after the new lantern beacon was lit on the northern pier.",
        "Container traffic was steady; bulk grain fell by a fifth after a poor harvest.",
    ],
    [
        "Maintenance and outlook",
        "",
        "The dredging of the inner basin finished two weeks early and under budget.",
        "Crane three needs a new gearbox; it is out of service until the spring.",
        "Next quarter the pilots start a trial of shared tide tables with the river port.",
    ],
]

DOCX_PARAGRAPHS = [
    ("Heading1", "Field notes from the glacier survey"),
    (None, "The survey team walked the eastern moraine for six days and set twelve new markers."),
    (None, "Meltwater channels moved about forty metres since the last survey, mostly to the south."),
    ("Heading2", "Equipment"),
    (None, "Two of the three GPS receivers worked throughout; the third failed in the cold."),
]


def write_samples(folder: Path) -> list[Path]:
    """Write the sample set into ``folder`` (created if needed); returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"<tr><td>{y}</td><td>{escape(e)}</td></tr>" for y, e in HISTORY_ROWS)
    files = {
        "chronos-overview.md": OVERVIEW.encode(),
        "computing-history.html": HTML_PAGE.format(rows=rows).encode(),
        "milestones.csv": ("year,event\n" + "".join(f'{y},"{e}"\n' for y, e in HISTORY_ROWS)).encode(),
        "harbour-report.pdf": pdf(PDF_PAGES),
        "field-notes.docx": docx(DOCX_PARAGRAPHS),
        "about-these-samples.txt": ABOUT.encode(),
    }
    written = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written


def pdf(pages: list[list[str]]) -> bytes:
    """A text PDF (Helvetica, one line per entry) with a correct cross-reference table."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    font = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for lines in pages:
        ops = ["BT", "/F1 18 Tf", "72 760 Td", "22 TL"]
        for i, line in enumerate(lines):
            if i == 1:
                ops.append("/F1 11 Tf 16 TL")
            text = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({text}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content = len(objects)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> "
                       b"/Contents %d 0 R >>" % (font, content))  # fmt: skip
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docx(paragraphs: list[tuple[str | None, str]]) -> bytes:
    """A minimal WordprocessingML package: content types, the package relationship, the document."""
    import io

    body = "".join(
        "<w:p>"
        + (f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else "")
        + f"<w:r><w:t>{escape(text)}</w:t></w:r></w:p>"
        for style, text in paragraphs
    )
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Target="word/document.xml" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>'
            "</Relationships>"
        ),
        "word/document.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            f"<w:document {_W}><w:body>{body}</w:body></w:document>"
        ),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            zf.writestr(name, text)
    return buf.getvalue()
