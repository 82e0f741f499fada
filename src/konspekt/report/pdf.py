"""The report's layout: :func:`konspekt.report.data.report_data` laid out with reportlab as an A4 PDF.

In order: a cover (title, duration, language, date, models, the transcriber's warnings, contents),
the summary, the outline with timestamps, voice analytics with charts, and the full transcript in timestamped paragraphs
under its outline sections. Everything is set in DejaVu Sans, because the built-in PDF fonts
have no Cyrillic and a Russian lecture would come out as black boxes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from reportlab.lib.colors import HexColor
from reportlab.lib.fonts import addMapping
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch, mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.tableofcontents import TableOfContents

from konspekt.report.charts import pitch_png, timeline_png
from konspekt.report.data import clock, formatted, model_label_of, voice_rows

FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONT_ITALIC = "DejaVuSans-Oblique"
ACCENT = "#1f4e79"
GREY = "#6b6b6b"
WARN = "#b35900"


def register_fonts(font_dir: Path) -> None:
    """Register DejaVu Sans (regular, bold, oblique) with reportlab, or say which file is missing."""
    files = {FONT: "DejaVuSans.ttf", FONT_BOLD: "DejaVuSans-Bold.ttf", FONT_ITALIC: "DejaVuSans-Oblique.ttf"}
    for name in (FONT, FONT_BOLD):
        if not (font_dir / files[name]).is_file():
            raise FileNotFoundError(
                f"font {files[name]} not found in {font_dir}; install fonts-dejavu-core or pass --font-dir"
            )
    # Oblique is optional: without it italics fall back to the upright face.
    italic = FONT_ITALIC if (font_dir / files[FONT_ITALIC]).is_file() else FONT
    for name in {FONT, FONT_BOLD, italic}:
        pdfmetrics.registerFont(TTFont(name, str(font_dir / files[name])))
    # The mapping lets <b> and <i> inside Paragraph markup find the right face.
    addMapping(FONT, 0, 0, FONT)
    addMapping(FONT, 1, 0, FONT_BOLD)
    addMapping(FONT, 0, 1, italic)
    addMapping(FONT, 1, 1, FONT_BOLD)


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=FONT, fontSize=10, leading=14, spaceAfter=6)
    grey = HexColor(GREY)
    return {
        "kicker": ParagraphStyle("kicker", base, fontSize=10, textColor=grey, spaceAfter=6),
        "title": ParagraphStyle("title", base, fontName=FONT_BOLD, fontSize=24, leading=30, spaceAfter=10,
                                textColor=HexColor(ACCENT)),
        "h1": ParagraphStyle("h1", base, fontName=FONT_BOLD, fontSize=15, leading=19, spaceBefore=6,
                             spaceAfter=8, textColor=HexColor(ACCENT), keepWithNext=1),
        "h2": ParagraphStyle("h2", base, fontName=FONT_BOLD, fontSize=10.5, leading=14, spaceAfter=2,
                             keepWithNext=1),
        "marker": ParagraphStyle("marker", base, fontName=FONT_BOLD, fontSize=9, leading=12, spaceBefore=8,
                                 spaceAfter=4, textColor=HexColor(ACCENT), keepWithNext=1),
        "body": base,
        "bullet": ParagraphStyle("bullet", base, fontSize=9.5, leading=13, leftIndent=12, bulletIndent=2,
                                 spaceAfter=2),
        "note": ParagraphStyle("note", base, fontSize=9, leading=12, textColor=grey),
        "cell": ParagraphStyle("cell", base, fontSize=9, leading=11, spaceAfter=0),
        "cellgrey": ParagraphStyle("cellgrey", base, fontSize=9, leading=11, spaceAfter=0, textColor=grey),
        "time": ParagraphStyle("time", base, fontName=FONT_BOLD, fontSize=9, leading=14, textColor=grey),
        "transcript": ParagraphStyle("transcript", base, fontSize=9.5, leading=13.5),
        "toc": ParagraphStyle("toc", base, fontSize=10.5, leading=16),
        "warning": ParagraphStyle("warning", base, fontSize=9, leading=12, spaceAfter=2, textColor=HexColor(WARN),
                                  leftIndent=10, bulletIndent=0),
        "unclear": ParagraphStyle("unclear", base, fontName=FONT_ITALIC, fontSize=9, leading=13.5, textColor=grey),
    }


def _text(text: str) -> str:
    """Plain text -> Paragraph markup: escape &, <, > and keep line breaks."""
    return escape(text.strip(), quote=False).replace("\n", "<br/>")


def _table(rows, widths, header: bool = False, zebra: bool = False) -> Table:
    table = Table(rows, colWidths=widths, hAlign="LEFT", repeatRows=1 if header else 0)
    style = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.3, HexColor("#dddddd")),
             ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 3)]
    if header:
        style += [("LINEBELOW", (0, 0), (-1, 0), 0.8, HexColor(ACCENT))]
    if zebra:
        style += [("ROWBACKGROUNDS", (0, 1), (-1, -1), [HexColor("#ffffff"), HexColor("#f4f6f9")])]
    table.setStyle(TableStyle(style))
    return table


@dataclass
class Page:
    """What every part of the layout needs: the styles, the text width, the clock format, the sections."""

    st: dict[str, ParagraphStyle]
    width: float
    hours: bool
    sections: list[dict[str, Any]]

    def p(self, markup: str, style: str = "body") -> Paragraph:
        return Paragraph(markup, self.st[style])

    def heading(self, text: str) -> Paragraph:
        heading = self.p(_text(text), "h1")
        heading.toc_entry = text  # picked up by NotesDoc.afterFlowable for the contents and bookmarks
        return heading


def cover(data: dict[str, Any], pg: Page) -> list:
    models = data["models"]
    facts = [
        ("File", data["file"]), ("Duration", clock(data["duration"], hours=True)),
        ("Language", data["language"] or "unknown"), ("Words", f"{data['words']:,}".replace(",", " ")),
        ("Sections", str(len(pg.sections)) if pg.sections else "n/a"), ("Date", data["date"]),
        *[(label, model_label_of(models[key])) for label, key in (
            ("Speech to text", "speech_to_text"), ("Summary", "summary"), ("Outline", "outline"),
            ("Voice analytics", "voice"))],
    ]
    toc = TableOfContents(dotsMinLevel=0)
    toc.levelStyles = [pg.st["toc"]]
    table = _table([[pg.p(_text(k), "cellgrey"), pg.p(_text(v), "cell")] for k, v in facts],
                   [38 * mm, pg.width - 38 * mm])
    return [Spacer(1, 35 * mm), pg.p("LECTURE NOTES", "kicker"), pg.p(_text(data["title"]), "title"),
            Spacer(1, 6 * mm), table, *warnings(data.get("warnings") or [], pg), Spacer(1, 12 * mm),
            pg.p("<b>Contents</b>", "h2"), toc, PageBreak()]


def warnings(items: list[str], pg: Page) -> list:
    """The transcriber's doubts, boxed on the cover: a reader should know before trusting the notes."""
    if not items:
        return []
    body = [pg.p("<b>Check before you rely on these notes</b>", "warning")]
    body += [Paragraph(_text(w), pg.st["warning"], bulletText="•") for w in items]
    box = Table([[body]], colWidths=[pg.width], hAlign="LEFT")
    box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.8, HexColor(WARN)),
                             ("BACKGROUND", (0, 0), (-1, -1), HexColor("#fff6e5"))]))
    return [Spacer(1, 6 * mm), box]


def summary_and_outline(data: dict[str, Any], pg: Page) -> list:
    summary = data["summary"]
    blocks = [b for b in summary["text"].split("\n\n") if b.strip()] or ["(the summary is empty)"]
    story = [pg.heading("Summary"), *[pg.p(_text(b)) for b in blocks]]
    if summary["note"]:
        story.append(pg.p(f"<i>Note: {_text(summary['note'])}</i>", "note"))

    story += [Spacer(1, 4 * mm), pg.heading("Outline")]
    if not data["outline"]:
        return story + [pg.p("The outline is not available for this recording.", "note")]
    time_w = (36 if pg.hours else 28) * mm  # "h:mm:ss–h:mm:ss" on one line
    for s in pg.sections:
        span = f"{clock(s['start'], pg.hours)}–{clock(s['end'], pg.hours)}"
        body = [pg.p(f"{s['section']}. {_text(s['title'])}", "h2")]
        body += [Paragraph(_text(p), pg.st["bullet"], bulletText="•") for p in s["points"]]
        story.append(KeepTogether([_table([[pg.p(span, "time"), body]], [time_w, pg.width - time_w]), Spacer(1, 2)]))
    if data["outline"]["note"]:
        story.append(pg.p(f"<i>{_text(data['outline']['note'])}</i>", "note"))
    return story


def voice_analytics(data: dict[str, Any], features: dict[str, Any] | None, pg: Page) -> list:
    """The voice summary, the timeline chart, then the pitch chart beside the per-section table;
    the charts read ``features`` itself, which ``report.json`` does not carry."""
    story = [PageBreak(), pg.heading("Voice analytics")]
    voice, features = data["voice"], features or {}
    if not voice:
        return story + [pg.p("Voice analytics are not available for this recording.")]
    pairs = voice_rows(voice["summary"])
    rows = [[pg.p(_text(a), "cellgrey"), pg.p(_text(b), "cell"), pg.p(_text(c), "cellgrey"), pg.p(_text(d), "cell")]
            for (a, b), (c, d) in zip(pairs[0::2], pairs[1::2])]
    story += [_table(rows, [30 * mm, pg.width / 2 - 30 * mm] * 2), Spacer(1, 4 * mm)]
    chart = timeline_png(features.get("timeline") or {}, [s["start"] for s in pg.sections], pg.width / inch, 3.3)
    if chart:
        story += [pg.p("Speech rate and loudness over time (dashed lines: section starts)", "note"),
                  Image(io.BytesIO(chart), width=pg.width, height=3.3 * inch)]
    else:
        story.append(pg.p("No timeline to plot.", "note"))

    # the pitch distribution and the per-section table side by side
    left_w = pg.width * 0.5
    pitch = pitch_png(features, left_w / inch, 2.2)
    left = [pg.p("Pitch distribution (voiced speech)", "note"),
            Image(io.BytesIO(pitch), width=left_w, height=2.2 * inch)] if pitch else []
    right = []
    if len(voice["sections"]) > 1:
        head = [pg.p(f"<b>{h}</b>", "cell") for h in ("§", "Start", "Rate", "Pitch", "Loud.")]
        body = [[pg.p(str(r["section"]), "cell"), pg.p(clock(r["start"], pg.hours), "cell"),
                 pg.p(formatted(r["speech_rate_wps"], ".2f"), "cell"),
                 pg.p(formatted(r["pitch_mean_hz"], ".0f"), "cell"),
                 pg.p(formatted(r["loudness_mean"], ".2f"), "cell")] for r in voice["sections"]]
        cols = [c * (pg.width - left_w - 6 * mm) for c in (0.12, 0.22, 0.23, 0.23, 0.2)]
        right = [pg.p("By section (rate: words/s, pitch: Hz)", "note"),
                 _table([head, *body], cols, header=True, zebra=True)]
    if left or right:
        side_by_side = Table([[left, right]], colWidths=[left_w + 2 * mm, pg.width - left_w - 2 * mm], hAlign="LEFT")
        side_by_side.setStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (0, 0), 0)])
        story += [Spacer(1, 4 * mm), side_by_side]
    return story


def transcript(data: dict[str, Any], pg: Page) -> list:
    """Timestamped paragraphs, under a marker at each section start when there is more than one."""
    story = [PageBreak(), pg.heading("Transcript")]
    if not data["transcript"]:
        story.append(pg.p("No speech was recognised in this recording."))
    current = None
    for para in data["transcript"]:
        if len(pg.sections) > 1 and para["section"] != current:
            current = para["section"]
            s = pg.sections[current - 1]
            story.append(pg.p(f"§{current} · {clock(s['start'], pg.hours)} — {_text(s['title'])}", "marker"))
        stamp = clock(para["start"], hours=pg.hours)
        if para.get("unclear"):  # marked by the transcriber: said as such, never as speech
            span = f'{stamp}–{clock(para["end"], hours=pg.hours)}'
            story.append(pg.p(f'[{span}] [unclear audio: {_text(para["unclear"])}; not transcribed]', "unclear"))
            continue
        who = f'<b>{_text(para["speaker"])}:</b> ' if para.get("speaker") else ""
        story.append(pg.p(f'<font color="{GREY}">[{stamp}]</font> {who}{_text(para["text"])}', "transcript"))
    return story


def build_story(data: dict[str, Any], features: dict[str, Any] | None, width: float) -> list:
    pg = Page(_styles(), width, data["duration"] >= 3600, (data["outline"] or {}).get("sections") or [])
    return [*cover(data, pg), *summary_and_outline(data, pg), *voice_analytics(data, features, pg),
            *transcript(data, pg)]


class NotesDoc(SimpleDocTemplate):
    def afterFlowable(self, flowable) -> None:
        """Each section heading goes into the contents and the PDF's bookmarks."""
        text = getattr(flowable, "toc_entry", None)
        if text:
            key = f"section-{text}"
            self.canv.bookmarkPage(key)
            self.canv.addOutlineEntry(text, key, level=0)
            self.notify("TOCEntry", (0, text, self.page, key))


def render(data: dict[str, Any], features: dict[str, Any] | None, target: Path) -> int:
    """Write the PDF of ``data`` to ``target`` (any file name; :func:`register_fonts` first); return the page count."""
    pages = 0
    title = data["title"]
    doc = NotesDoc(
        str(target), pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=22 * mm,
        bottomMargin=18 * mm, title=title, author="konspekt", subject="lecture notes",
    )

    def decorate(canvas, doc_) -> None:
        nonlocal pages
        pages = doc_.page
        page_w, page_h = A4
        canvas.saveState()
        canvas.setFillColor(HexColor(GREY))
        canvas.setFont(FONT, 8)
        if doc_.page > 1:  # the cover has its own title
            canvas.drawString(doc_.leftMargin, page_h - 13 * mm, title if len(title) <= 80 else title[:77] + "...")
            canvas.drawRightString(page_w - doc_.rightMargin, page_h - 13 * mm, "konspekt · lecture notes")
            canvas.setStrokeColor(HexColor("#cccccc"))
            canvas.setLineWidth(0.4)
            canvas.line(doc_.leftMargin, page_h - 14.5 * mm, page_w - doc_.rightMargin, page_h - 14.5 * mm)
        canvas.drawRightString(page_w - doc_.rightMargin, 10 * mm, f"Page {doc_.page}")
        canvas.restoreState()

    # Two passes: the first finds the pages the contents on the cover point to.
    doc.multiBuild(build_story(data, features, doc.width), onFirstPage=decorate, onLaterPages=decorate)
    return pages
