"""render_pdf: transcript + summary + outline + voice features -> ``report.pdf`` and ``report.json``, the study notes.

:mod:`konspekt.report.data` decides what the notes say, which ``report.json`` holds for machines;
the PDF is laid out from that same data (:mod:`konspekt.report.pdf`), so the two cannot disagree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from konspekt.contracts import log
from konspekt.layout import VideoDir, atomic_path, write_json
from konspekt.report.data import load_report, report_data
from konspekt.stage import main_for

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def run(video: VideoDir, args: argparse.Namespace):
    # reportlab takes as long to import as everything else: keep --help fast
    from konspekt.report import pdf

    pdf.register_fonts(Path(args.font_dir))
    report = load_report(video)
    data = report_data(report)
    with atomic_path(video.report_pdf) as tmp:
        pages = pdf.render(data, report.features, tmp)
    write_json(video.report_json, {**data, "pages": pages})
    log(f"rendered {pages} pages for {video.title}")
    return [video.report_pdf, video.report_json], {"pages": pages}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--font-dir", type=Path, default=FONT_DIR, help="folder with the DejaVuSans TTF files")


main = main_for("render_pdf", __doc__.splitlines()[0], _configure, run,
                # features and outline are optional: their absence is recorded, so their arrival reruns it
                reads=lambda video: [video.transcript_json, video.summary_json, video.features_json,
                                     video.outline_json],
                packages=["reportlab"])

if __name__ == "__main__":
    raise SystemExit(main())
