"""render_pdf: transcript + summary + outline + voice features -> ``report.pdf`` and ``report.json``, the study notes.

In order: a cover (title, duration, language, date, models, contents), the summary,
the outline with timestamps, voice analytics with charts, and the full transcript in
timestamped paragraphs under its outline sections. ``report.json`` holds the same
content for machines, and the PDF is laid out from it, so the two cannot disagree.

Everything is set in DejaVu Sans, because the built-in PDF fonts have no Cyrillic
and a Russian lecture would come out as black boxes. reportlab and matplotlib are
imported inside the functions (charts: :mod:`konspekt.charts`), so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Any

from konspekt.charts import pitch_png, timeline_png
from konspekt.contracts import Outline, Section, Summary, Transcript
from konspekt.layout import VideoDir, atomic_path, read_json, write_json
from konspekt.sentences import Sentence, timed_sentences
from konspekt.stage import log, main_for

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONT_ITALIC = "DejaVuSans-Oblique"
ACCENT = "#1f4e79"
GREY = "#6b6b6b"

PARAGRAPH_SECONDS = 40.0  # a transcript paragraph: about 100 words of speech


@dataclass
class Report:
    title: str
    file: str
    transcript: Transcript
    summary: Summary
    outline: Outline | None
    features: dict[str, Any] | None
    date: str


def register_fonts(font_dir: Path) -> None:
    """Register DejaVu Sans (regular, bold, oblique) with reportlab, or say which file is missing."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

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


# --- the content, as report.json holds it -------------------------------------------------------

def clock(seconds: float, hours: bool = False) -> str:
    """``mm:ss``, or ``h:mm:ss`` when ``hours`` (or when the time needs it)."""
    total = max(0, int(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if hours or h else f"{m:02d}:{s:02d}"


def model_label(name: str | None) -> str:
    """A model as a reader wants it: a hub id as is; a folder by its last two parts, or by the hub id
    a cache folder (``models--org--name/snapshots/<hash>``) stands for, not a site-packages path."""
    if not name:
        return "n/a"
    if not name.startswith(("/", ".", "~")):
        return name
    parts = Path(name).parts
    for part in parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return "/".join(parts[-2:])


def paragraphs(sentences: list[Sentence], breaks: list[float] = ()) -> list[list[Sentence]]:
    """Consecutive sentences in paragraphs of about ``PARAGRAPH_SECONDS``; one also starts at each of
    ``breaks`` (the outline's section starts), so no paragraph straddles two sections, and at each
    change of speaker."""
    groups: list[list[Sentence]] = []
    pending = sorted(breaks)
    for sentence in sentences:
        crossed = False
        while pending and sentence.start >= pending[0] - 1e-6:
            pending.pop(0)
            crossed = True
        if (not groups or crossed or sentence.start - groups[-1][0].start >= PARAGRAPH_SECONDS
                or sentence.speaker != groups[-1][0].speaker):
            groups.append([])
        groups[-1].append(sentence)
    return groups


def section_number(t: float, sections: list[Section]) -> int | None:
    """1-based number of the section ``t`` falls in (by section starts), None without an outline."""
    number = None
    for i, section in enumerate(sections, 1):
        if number is None or t >= section.start - 1e-6:
            number = i
    return number


def _mean(values: list) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return round(sum(finite) / len(finite), 4) if finite else None


def voice_by_section(timeline: dict[str, Any], sections: list[Section]) -> list[dict[str, Any]]:
    """Speech rate, pitch and loudness averaged over each section's stretch of the timeline."""
    time = timeline.get("time") or []
    columns = {out: timeline.get(key) or [None] * len(time) for out, key in (
        ("speech_rate_wps", "speech_rate_wps"), ("pitch_mean_hz", "pitch_hz"), ("loudness_mean", "loudness"))}
    rows = []
    for i, section in enumerate(sections):
        end = sections[i + 1].start if i + 1 < len(sections) else math.inf
        idx = [k for k, t in enumerate(time) if section.start <= t < end]
        rows.append({"section": i + 1, "start": section.start,
                     **{out: _mean([col[k] for k in idx]) for out, col in columns.items()}})
    return rows


def report_data(report: Report) -> dict[str, Any]:
    """Everything the PDF shows, as plain data: what ``report.json`` holds."""
    tr, summ = report.transcript, report.summary
    sections = report.outline.sections if report.outline else []
    words = sum(len(s.words) or len(s.text.split()) for s in tr.segments)
    feats = report.features
    return {
        "title": report.title,
        "file": report.file,
        "date": report.date,
        "duration": round(tr.duration, 3),
        "language": tr.language,
        "words": words,
        "models": {
            "speech_to_text": {"method": tr.backend, "model": tr.model},
            "summary": {"method": summ.method, "model": summ.model},
            "outline": {"method": report.outline.method, "model": report.outline.model} if report.outline else None,
            "voice": {"method": "openSMILE", "model": feats.get("feature_set", "eGeMAPSv02")} if feats else None,
        },
        "summary": {"method": summ.method, "model": summ.model, "text": summ.text, "note": summ.note},
        "outline": None if report.outline is None else {
            "note": report.outline.note,
            "sections": [{"section": i, **asdict(s)} for i, s in enumerate(sections, 1)],
        },
        "voice": None if not feats else {
            "summary": feats.get("summary") or {},
            "sections": voice_by_section(feats.get("timeline") or {}, sections),
            "per_minute": feats.get("per_minute") or [],
        },
        "transcript": [
            {"start": round(g[0].start, 3), "end": round(g[-1].end, 3),
             "section": section_number(g[0].start, sections), "speaker": g[0].speaker,
             "text": " ".join(s.text for s in g)}
            for g in paragraphs(timed_sentences(tr), [s.start for s in sections[1:]])
        ],
    }


# --- layout --------------------------------------------------------------------------------------

def _styles():
    from reportlab.lib.colors import HexColor
    from reportlab.lib.styles import ParagraphStyle

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
    }


def _text(text: str) -> str:
    """Plain text -> Paragraph markup: escape &, <, > and keep line breaks."""
    return escape(text.strip(), quote=False).replace("\n", "<br/>")


def _number(value: Any, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def voice_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    loud, loud_sd = summary.get("loudness_mean"), summary.get("loudness_sd")
    loudness = _number(loud, ".2f")
    if loudness != "n/a" and loud_sd is not None:
        loudness += f" (sd {_number(loud_sd, '.2f')})"
    pause = summary.get("pause_ratio")
    return [
        ("Speech rate", _number(summary.get("speech_rate_wps"), ".2f", " words/s")),
        ("Pause ratio", _number(None if pause is None else pause * 100, ".1f", " %")),
        ("Long pauses", _number(summary.get("long_pauses"), "d")),
        ("Mean pitch", _number(summary.get("pitch_mean_hz"), ".0f", " Hz")),
        ("Pitch variability", _number(summary.get("pitch_sd_semitones"), ".1f", " semitones")),
        ("Loudness", loudness),
    ]


def _table(rows, widths, header: bool = False, zebra: bool = False):
    from reportlab.lib.colors import HexColor
    from reportlab.platypus import Table, TableStyle

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

    st: dict
    width: float
    hours: bool
    sections: list[dict[str, Any]]

    def p(self, markup: str, style: str = "body"):
        from reportlab.platypus import Paragraph

        return Paragraph(markup, self.st[style])

    def heading(self, text: str):
        heading = self.p(_text(text), "h1")
        heading.toc_entry = text  # picked up by NotesDoc.afterFlowable for the contents and bookmarks
        return heading


def cover(data: dict[str, Any], pg: Page) -> list:
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, Spacer
    from reportlab.platypus.tableofcontents import TableOfContents

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
            Spacer(1, 6 * mm), table, Spacer(1, 12 * mm), pg.p("<b>Contents</b>", "h2"), toc, PageBreak()]


def summary_and_outline(data: dict[str, Any], pg: Page) -> list:
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, Spacer

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
    from reportlab.lib.units import inch, mm
    from reportlab.platypus import Image, PageBreak, Spacer, Table

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
                 pg.p(_number(r["speech_rate_wps"], ".2f"), "cell"), pg.p(_number(r["pitch_mean_hz"], ".0f"), "cell"),
                 pg.p(_number(r["loudness_mean"], ".2f"), "cell")] for r in voice["sections"]]
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
    from reportlab.platypus import PageBreak

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
        who = f'<b>{_text(para["speaker"])}:</b> ' if para.get("speaker") else ""
        story.append(pg.p(f'<font color="{GREY}">[{stamp}]</font> {who}{_text(para["text"])}', "transcript"))
    return story


def build_story(data: dict[str, Any], features: dict[str, Any] | None, width: float) -> list:
    pg = Page(_styles(), width, data["duration"] >= 3600, (data["outline"] or {}).get("sections") or [])
    return [*cover(data, pg), *summary_and_outline(data, pg), *voice_analytics(data, features, pg),
            *transcript(data, pg)]


def model_label_of(used: dict[str, str] | None) -> str:
    """``{"method", "model"}`` as "method · short model name"."""
    return f"{used['method']} · {model_label(used['model'])}" if used else "n/a"


def render(data: dict[str, Any], features: dict[str, Any] | None, target: Path) -> int:
    """Write the PDF to ``target`` (any file name); return the page count."""
    from reportlab.lib.colors import HexColor
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    class NotesDoc(SimpleDocTemplate):
        def afterFlowable(self, flowable) -> None:
            """Each section heading goes into the contents and the PDF's bookmarks."""
            text = getattr(flowable, "toc_entry", None)
            if text:
                key = f"section-{text}"
                self.canv.bookmarkPage(key)
                self.canv.addOutlineEntry(text, key, level=0)
                self.notify("TOCEntry", (0, text, self.page, key))

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


def load_report(video: VideoDir) -> Report:
    for path in (video.transcript_json, video.summary_json):
        if not path.is_file():
            raise FileNotFoundError(f"{path.name} is missing in {video.path}; the earlier stages did not finish")
    features = read_json(video.features_json) if video.features_json.is_file() else None
    outline = Outline.load(video.outline_json) if video.outline_json.is_file() else None
    for name, value in (("features.json", features), ("outline.json", outline)):
        if value is None:
            log(f"{name} is missing; its section will say so")
    return Report(
        title=video.title, file=video.name,
        transcript=Transcript.load(video.transcript_json),
        summary=Summary.load(video.summary_json),
        outline=outline, features=features,
        date=dt.date.today().isoformat(),
    )


def run(video: VideoDir, args: argparse.Namespace):
    register_fonts(Path(args.font_dir))
    report = load_report(video)
    data = report_data(report)
    with atomic_path(video.report_pdf) as tmp:
        pages = render(data, report.features, tmp)
    write_json(video.report_json, {**data, "pages": pages})
    log(f"rendered {pages} pages for {video.title}")
    return [video.report_pdf, video.report_json], {"pages": pages}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--font-dir", type=Path, default=FONT_DIR, help="folder with the DejaVuSans TTF files")


main = main_for("render_pdf", __doc__.splitlines()[0], _configure, run,
                # features and outline are optional: their absence is recorded, so their arrival reruns it
                reads=lambda video: [video.transcript_json, video.summary_json, video.features_json,
                                     video.outline_json],
                writes=["report.pdf", "report.json"], packages=["reportlab"])

if __name__ == "__main__":
    raise SystemExit(main())
