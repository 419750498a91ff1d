"""A generated corpus with planted facts for ``chronos bench retrieval`` (and its tests).

Every document is written at run time (deterministic for a seed). Each planted fact has a question
worded differently from the text and the string a relevant chunk must contain. The kinds:

* ``title_only``  the answer chunk does not name its subject, only the document's title does
                  ("the port throughput measure rose 8.8 percent" in "Saskatoon ... Brief, Q1 2025");
* ``title_only_opaque_name``  the same, in a brief whose file name says nothing ("brief-0417.docx"):
                  only the title inside the document names the city (a system that embeds the file name
                  as the subject gets no help);
* ``distractor``  two briefs of the same city (Q1, Q2) with the same indicators: only one is right;
* ``table``       a value in a table row (housing starts by month; a workbook of indicators);
* ``needle``      a sentence deep in a 40-page PDF (the right page is checked too);
* ``exact``       an exact code or figure ("CHRONOS-495", "ZX-7731-Q") the embedding cannot tell apart.

Formats: Markdown, DOCX, HTML and PDF briefs (rotated), an XLSX workbook, long PDFs.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field
from pathlib import Path

from app.bench.docgen import paragraph

CITIES = (
    "Saskatoon", "Regina", "Lethbridge", "Kelowna", "Moncton", "Thunder Bay", "Kamloops", "Sherbrooke",
    "Nanaimo", "Red Deer", "Brandon", "Fredericton",
)  # fmt: skip
QUARTERS = {"Q1": ("January", "February", "March", "first quarter"),
            "Q2": ("April", "May", "June", "second quarter")}  # fmt: skip
FORMATS = ("md", "docx", "html", "pdf")
# one depot per needle (three a manual): a depot named twice made two manuals answer one question
DEPOTS = (
    "Hornepayne",
    "Capreol",
    "Foleyet",
    "Armstrong",
    "Sioux Lookout",
    "Nakina",
    "Longlac",
    "Gogama",
    "Chapleau",
    "White River",
    "Geraldton",
    "Redditt",
)
FILLER = (
    "Conditions were broadly in line with the provincial picture. Analysts cautioned that several series "
    "are revised when annual benchmarks arrive, and that single-quarter movements should be read with care."
)


@dataclass(frozen=True)
class Question:
    kind: str
    question: str
    filename: str  # the document holding the answer
    answer: str  # a relevant chunk contains this (case-insensitive)
    page: int | None = None  # and covers this page, when given


@dataclass
class Corpus:
    files: list[Path] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def can_write_pdf() -> bool:
    import importlib.util

    return importlib.util.find_spec("fpdf") is not None


@dataclass
class _Brief:
    city: str
    quarter: str
    port: str
    unemployment: str
    starts: list[int]
    permits: list[int]


def generate(directory: Path, *, cities: int = 8, long_pdfs: int = 2, pages: int = 40, formats: tuple[str, ...] =
             FORMATS, seed: int = 5) -> Corpus:  # fmt: skip
    """Write the corpus into ``directory``; returns its files and questions."""
    if long_pdfs > MAX_MANUALS:
        raise ValueError(f"at most {MAX_MANUALS} long PDFs (each needle needs a depot of its own), not {long_pdfs}")
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    corpus = Corpus()
    if ("pdf" in formats or long_pdfs) and not can_write_pdf():
        corpus.notes.append("no PDFs: writing them needs fpdf2 (make install-bench); the corpus has none")
        formats = tuple(f for f in formats if f != "pdf") or ("md",)
        long_pdfs = 0
    used: set[str] = set()

    def unique(make: object) -> str:
        while True:
            value = str(make() if callable(make) else make)
            if value not in used:
                used.add(value)
                return value

    for i, city in enumerate(CITIES[:cities]):
        for q_index, quarter in enumerate(QUARTERS):
            brief = _Brief(
                city, quarter,
                port=unique(lambda: f"{rng.randint(11, 149) / 10:.1f}"),
                unemployment=unique(lambda: f"{rng.randint(31, 99) / 10:.1f}"),
                starts=[int(unique(lambda: rng.randint(120, 980))) for _ in range(3)],
                permits=[int(unique(lambda: rng.randint(1000, 4999))) for _ in range(3)],
            )  # fmt: skip
            fmt = formats[(i * 2 + q_index) % len(formats)]
            opaque = i % 2 == 1  # every other city's briefs: a file name that names nothing
            stem = f"brief-{unique(lambda: rng.randint(1000, 9999))}" if opaque else None
            path = _write_brief(directory, brief, fmt, rng, stem)
            corpus.files.append(path)
            corpus.questions += _brief_questions(brief, path.name, fmt, rng, opaque)
    corpus.files.append(_write_workbook(directory, corpus, rng, cities))
    corpus.files.append(_write_register(directory, corpus, rng))
    for n in range(long_pdfs):
        corpus.files.append(_write_manual(directory, corpus, rng, n, pages))
    return corpus


# --- city briefs ----------------------------------------------------------------------------


def _title(b: _Brief) -> str:
    return f"{b.city} Regional Economic Brief, {b.quarter} 2025"


def _sections(b: _Brief, rng: random.Random) -> list[tuple[str, list[str] | list[list[str]]]]:
    """(heading, paragraphs) or (heading, table rows); no paragraph names the city."""
    months = QUARTERS[b.quarter][:3]
    return [
        ("Overview", [FILLER, paragraph(rng, 3)]),
        ("Labour market", [f"The unemployment rate settled at {b.unemployment} percent over the quarter, while "
                           "participation held steady and average weekly hours edged up. " + FILLER]),
        ("Trade and transport", [f"The port throughput measure rose {b.port} percent compared with the previous "
                                 "quarter, helped by grain and potash shipments. " + FILLER]),
        ("Housing", [["Indicator", *months],
                     ["Housing starts", *map(str, b.starts)],
                     ["Building permits", *map(str, b.permits)]]),
        ("Outlook", [paragraph(rng, 4), FILLER]),
    ]  # fmt: skip


def _brief_questions(b: _Brief, filename: str, fmt: str, rng: random.Random, opaque: bool) -> list[Question]:
    qword = QUARTERS[b.quarter][3]
    month_i = rng.randrange(3)
    month = QUARTERS[b.quarter][month_i]
    title_kind = "title_only_opaque_name" if opaque else "title_only"
    out = [
        Question(title_kind, f"How much did cargo volumes through the port grow in {b.city} in the {qword} of 2025?",
                 filename, f"{b.port} percent"),
        Question("distractor", f"What was the jobless rate in {b.city} during the {qword} of 2025?",
                 filename, f"{b.unemployment} percent"),
        Question("exact", f"Where did port throughput rise {b.port} percent?", filename, f"{b.port} percent"),
    ]  # fmt: skip
    if fmt != "pdf":  # the model-free PDF pipeline here reads no table structure
        out.append(Question("table", f"How many new homes were started in {b.city} in {month} 2025?", filename,
                            str(b.starts[month_i])))  # fmt: skip
    return out


def _write_brief(directory: Path, b: _Brief, fmt: str, rng: random.Random, stem: str | None = None) -> Path:
    stem = stem or f"{b.city.lower().replace(' ', '-')}-brief-{b.quarter.lower()}-2025"
    path = directory / f"{stem}.{fmt}"
    sections = _sections(b, rng)
    if fmt == "md":
        parts = [f"# {_title(b)}"]
        for heading, body in sections:
            parts.append(f"## {heading}")
            if body and isinstance(body[0], list):
                rows = [r for r in body if isinstance(r, list)]
                parts.append("\n".join(["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0]),
                                        *("| " + " | ".join(r) + " |" for r in rows[1:])]))  # fmt: skip
            else:
                parts += [str(p) for p in body]
        path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    elif fmt == "html":
        parts = [f"<html><head><title>{html.escape(_title(b))}</title></head><body><h1>{html.escape(_title(b))}</h1>"]
        for heading, body in sections:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
            if body and isinstance(body[0], list):
                rows = [r for r in body if isinstance(r, list)]
                head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
                cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            else:
                parts += [f"<p>{html.escape(str(p))}</p>" for p in body]
        path.write_text("".join(parts) + "</body></html>\n", encoding="utf-8")
    elif fmt == "docx":
        import docx

        d = docx.Document()
        d.add_heading(_title(b), level=1)
        for heading, body in sections:
            d.add_heading(heading, level=2)
            if body and isinstance(body[0], list):
                rows = [r for r in body if isinstance(r, list)]
                table = d.add_table(rows=len(rows), cols=len(rows[0]))
                for r, row in enumerate(rows):
                    for c, value in enumerate(row):
                        table.cell(r, c).text = value
            else:
                for p in body:
                    d.add_paragraph(str(p))
        d.save(str(path))
    else:
        _write_pdf(path, _title(b), sections)
    return path


def _write_pdf(path: Path, title: str, sections: list[tuple[str, list[str] | list[list[str]]]]) -> None:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(0, 9, title, new_x="LMARGIN", new_y="NEXT")
    for heading, body in sections:
        pdf.set_font("Helvetica", "B", 13)
        pdf.multi_cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        for p in body:
            text = "   ".join(p) if isinstance(p, list) else p
            pdf.multi_cell(0, 5.5, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    pdf.output(str(path))


# --- a workbook, a register of codes, long manuals ------------------------------------------


def _write_workbook(directory: Path, corpus: Corpus, rng: random.Random, cities: int) -> Path:
    import openpyxl  # type: ignore[import-untyped]

    path = directory / "provincial-indicators-2025.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Vacancy"
    ws.append(["City", "Rental vacancy rate (percent)", "Average rent (dollars)"])
    for city in CITIES[:cities]:
        rent = rng.randint(900, 2400) * 1
        vacancy = f"{rng.randint(5, 79) / 10:.1f}"
        ws.append([city, vacancy, str(rent)])
        corpus.questions.append(Question("table", f"What is the average rent in {city} in the provincial workbook?",
                                         path.name, str(rent)))  # fmt: skip
    wb.save(str(path))
    return path


def _write_register(directory: Path, corpus: Corpus, rng: random.Random) -> Path:
    path = directory / "harbour-permit-register.md"
    places = ("ferry landing", "fuel dock", "boat ramp", "breakwater", "cargo shed", "slipway", "tide gauge",
              "pilot station", "net loft", "ice house")  # fmt: skip
    lines = ["# Harbour Permit Register", "", "## Permits in force", ""]
    for i in range(60):
        code = f"ZX-{rng.randint(1000, 9999)}-{chr(65 + rng.randrange(26))}"
        place = f"the {places[i % len(places)]} at berth {i + 1}"
        lines.append(f"Permit {code} covers {place} and is renewed each spring after inspection.")
        lines.append("")
        if i % 6 == 0:
            corpus.questions.append(Question("exact", f"What does permit {code} cover?", path.name, code))
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


MAX_MANUALS = len(DEPOTS) // 3


def depots_of(n: int) -> list[str]:
    """The three depots whose needles manual ``n`` holds (no depot in two manuals)."""
    if not 0 <= n < MAX_MANUALS:
        raise ValueError(f"at most {MAX_MANUALS} long PDFs (each needle needs a depot of its own)")
    return list(DEPOTS[n * 3 : n * 3 + 3])


def _write_manual(directory: Path, corpus: Corpus, rng: random.Random, n: int, pages: int) -> Path:
    from fpdf import FPDF

    from app.bench.docgen import sentence

    path = directory / f"rail-maintenance-manual-{n + 1}.pdf"
    needles = {rng.randint(pages // 3, pages): depot for depot in depots_of(n)}
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(20, 20, 20)
    for number in range(1, pages + 1):
        pdf.add_page()
        if number == 1:
            pdf.set_font("Helvetica", "B", 18)
            pdf.multi_cell(0, 10, f"Northern Rail Maintenance Manual, Volume {n + 1}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 15)
        pdf.multi_cell(0, 9, f"Section {number}: {sentence(rng, 4)[:-1]}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        for k in range(3):
            text = paragraph(rng, 4)
            if k == 1 and number in needles:
                code = f"CHRONOS-{rng.randint(100, 999)}"
                depot = needles[number]
                text += f" Inspection code {code} governs the replacement of signal lamps at the {depot} depot."
                corpus.questions.append(Question(
                    "needle", f"Which inspection code applies when signal lamps are replaced at {depot}?",
                    path.name, code, page=number,
                ))  # fmt: skip
            pdf.multi_cell(0, 5.5, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    pdf.output(str(path))
    return path
