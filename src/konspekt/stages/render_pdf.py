"""render_pdf: transcript + summary + acoustic features -> ``report.pdf``, the study notes.

Everything is set in DejaVu Sans, because the built-in PDF fonts have no Cyrillic
and a Russian lecture would come out as black boxes. reportlab and matplotlib are
imported inside the functions, so ``--help`` and the other stages stay fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from html import escape

from konspekt.contracts import Segment, Summary, Transcript
from konspekt.layout import VideoDir, atomic_path, read_json
from konspekt.stage import log, main_for

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONT_ITALIC = "DejaVuSans-Oblique"

PARAGRAPH_SECONDS = 60.0  # a transcript paragraph covers about a minute of speech...
PARAGRAPH_SEGMENTS = 6  # ...or a handful of segments, whichever comes first
CHART_POINTS = 1500  # a denser timeline only slows matplotlib without a visible difference


@dataclass
class Report:
    title: str
    transcript: Transcript
    summary: Summary
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


def clock(seconds: float, hours: bool = False) -> str:
    """``mm:ss``, or ``h:mm:ss`` when ``hours`` (or when the time needs it)."""
    total = max(0, int(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if hours or h else f"{m:02d}:{s:02d}"


def group_segments(segments: list[Segment]) -> list[list[Segment]]:
    """Consecutive segments in paragraphs of about a minute, so the transcript reads as prose."""
    groups: list[list[Segment]] = []
    for seg in segments:
        if not seg.text.strip():
            continue
        if (
            not groups
            or len(groups[-1]) >= PARAGRAPH_SEGMENTS
            or seg.start - groups[-1][0].start >= PARAGRAPH_SECONDS
        ):
            groups.append([])
        groups[-1].append(seg)
    return groups


def chart_png(timeline: dict[str, Any], width_in: float = 7.0, height_in: float = 3.2) -> bytes | None:
    """Loudness and pitch over time as PNG bytes; None if the timeline is empty."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    def series(key: str) -> np.ndarray:
        return np.array([math.nan if v is None else float(v) for v in timeline.get(key) or []], dtype=float)

    time, loudness, pitch = series("time"), series("loudness"), series("pitch_hz")
    n = min(len(time), len(loudness))
    if n < 2:
        return None
    pitch = np.concatenate([pitch, np.full(max(0, n - len(pitch)), math.nan)])  # pitch may be absent
    time, loudness, pitch = time[:n], loudness[:n], pitch[:n]
    if n > CHART_POINTS:  # average into bins; nanmean keeps unvoiced gaps as gaps
        edges = np.linspace(0, n, CHART_POINTS + 1).astype(int)
        binned = lambda a: np.array([_nanmean(a[i:j]) for i, j in zip(edges[:-1], edges[1:])])  # noqa: E731
        time, loudness, pitch = binned(time), binned(loudness), binned(pitch)
    minutes = time[-1] > 180
    x = time / 60.0 if minutes else time

    fig = Figure(figsize=(width_in, height_in), dpi=150)
    ax_l, ax_p = fig.subplots(2, 1, sharex=True)
    ax_l.plot(x, loudness, color="#1f77b4", linewidth=0.8)
    ax_l.set_ylabel("loudness")
    ax_p.plot(x, pitch, color="#d62728", linewidth=0.8)
    ax_p.set_ylabel("pitch, Hz")
    ax_p.set_xlabel("time, min" if minutes else "time, s")
    for ax in (ax_l, ax_p):
        ax.grid(True, linewidth=0.3, alpha=0.6)
        ax.tick_params(labelsize=7)
        ax.yaxis.label.set_size(8)
    ax_p.xaxis.label.set_size(8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _nanmean(a) -> float:
    import numpy as np

    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else math.nan


def _styles():
    from reportlab.lib.colors import HexColor
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("body", fontName=FONT, fontSize=10, leading=14, spaceAfter=6)
    return {
        "title": ParagraphStyle("title", base, fontName=FONT_BOLD, fontSize=20, leading=24, spaceAfter=4),
        "subtitle": ParagraphStyle("subtitle", base, fontSize=9, leading=12, textColor=HexColor("#555555"),
                                   spaceAfter=14),
        "h1": ParagraphStyle("h1", base, fontName=FONT_BOLD, fontSize=14, leading=18, spaceBefore=12,
                             spaceAfter=6),
        "body": base,
        "note": ParagraphStyle("note", base, fontSize=9, leading=12, textColor=HexColor("#555555")),
        "cell": ParagraphStyle("cell", base, fontSize=9, leading=11, spaceAfter=0),
        "transcript": ParagraphStyle("transcript", base, fontSize=9.5, leading=13),
    }


def _text(text: str) -> str:
    """Plain text -> Paragraph markup: escape &, <, > and keep line breaks."""
    return escape(text.strip(), quote=False).replace("\n", "<br/>")


def _number(value: Any, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def acoustic_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
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


def build_story(report: Report, width: float) -> list:
    from reportlab.lib.colors import HexColor
    from reportlab.lib.units import inch
    from reportlab.platypus import Image, Paragraph, Spacer, Table, TableStyle

    st = _styles()
    tr, summ = report.transcript, report.summary
    hours = tr.duration >= 3600
    subtitle = " · ".join([
        f"Duration {clock(tr.duration, hours=True)}",
        f"language: {tr.language or 'unknown'}",
        f"report of {report.date}",
        f"transcript: Whisper {tr.model}",
        f"summary: {summ.method} ({summ.model})",
    ])
    story: list = [Paragraph(_text(report.title), st["title"]), Paragraph(_text(subtitle), st["subtitle"])]

    story.append(Paragraph("Summary", st["h1"]))
    blocks = [b for b in summ.text.split("\n\n") if b.strip()] or ["(the summary is empty)"]
    story += [Paragraph(_text(b), st["body"]) for b in blocks]
    if summ.note:
        story.append(Paragraph(f"<i>{_text(summ.note)}</i>", st["note"]))

    story.append(Paragraph("Acoustic profile", st["h1"]))
    feats = report.features
    if not feats:
        story.append(Paragraph("Acoustic features are not available for this recording.", st["body"]))
    else:
        rows = [[Paragraph(_text(k), st["cell"]), Paragraph(_text(v), st["cell"])]
                for k, v in acoustic_rows(feats.get("summary") or {})]
        table = Table(rows, colWidths=[width * 0.35, width * 0.35], hAlign="LEFT")
        table.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.4, HexColor("#bbbbbb")),
            ("BACKGROUND", (0, 0), (0, -1), HexColor("#f2f2f2")),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]))
        story += [table, Spacer(1, 10)]
        png = chart_png(feats.get("timeline") or {}, width_in=width / inch, height_in=3.0)
        if png:
            story.append(Image(io.BytesIO(png), width=width, height=3.0 * inch))
        else:
            story.append(Paragraph("No loudness/pitch timeline to plot.", st["note"]))

    story.append(Paragraph("Transcript", st["h1"]))
    groups = group_segments(tr.segments)
    if not groups:
        story.append(Paragraph("No speech was recognised in this recording.", st["body"]))
    for group in groups:
        text = " ".join(s.text.strip() for s in group)
        stamp = clock(group[0].start, hours=hours)
        story.append(Paragraph(f'<font color="#777777">[{stamp}]</font> {_text(text)}', st["transcript"]))
    return story


def render(report: Report, target: Path) -> int:
    """Write the PDF to ``target`` (any file name); return the page count."""
    from reportlab.lib.colors import HexColor
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    pages = 0
    doc = SimpleDocTemplate(
        str(target), pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=20 * mm,
        bottomMargin=18 * mm, title=report.title, author="konspekt", subject="lecture notes",
    )

    def decorate(canvas, doc_) -> None:
        nonlocal pages
        pages = doc_.page
        page_w, page_h = A4
        canvas.saveState()
        canvas.setFillColor(HexColor("#777777"))
        canvas.setFont(FONT, 8)
        header = report.title if len(report.title) <= 90 else report.title[:87] + "..."
        canvas.drawString(doc_.leftMargin, page_h - 12 * mm, header)
        canvas.setStrokeColor(HexColor("#cccccc"))
        canvas.setLineWidth(0.4)
        canvas.line(doc_.leftMargin, page_h - 13.5 * mm, page_w - doc_.rightMargin, page_h - 13.5 * mm)
        canvas.drawRightString(page_w - doc_.rightMargin, 10 * mm, f"Page {doc_.page}")
        canvas.restoreState()

    doc.build(build_story(report, doc.width), onFirstPage=decorate, onLaterPages=decorate)
    return pages


def load_report(video: VideoDir) -> Report:
    for path in (video.transcript_json, video.summary_json):
        if not path.is_file():
            raise FileNotFoundError(f"{path.name} is missing in {video.path}; the earlier stages did not finish")
    features = read_json(video.features_json) if video.features_json.is_file() else None
    if features is None:
        log("features.json is missing; the acoustic section will say so")
    return Report(
        title=video.title,
        transcript=Transcript.load(video.transcript_json),
        summary=Summary.load(video.summary_json),
        features=features,
        date=dt.date.today().isoformat(),
    )


def run(video: VideoDir, args: argparse.Namespace):
    register_fonts(Path(args.font_dir))
    report = load_report(video)
    with atomic_path(video.report_pdf) as tmp:
        pages = render(report, tmp)
    log(f"rendered {pages} pages for {video.title}")
    return [video.report_pdf], {"pages": pages}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--font-dir", type=Path, default=FONT_DIR, help="folder with the DejaVuSans TTF files")


main = main_for("render_pdf", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
