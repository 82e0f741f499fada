"""render_pdf: transcript + summary + outline + voice -> ``features.{csv,json}``, ``report.pdf`` and ``report.json``.

First the voice the features stage measured (``voice.npz``, ``voice.json``) is cut by the transcript's
segments and word times (:mod:`konspekt.prosody`): ``features.csv`` per segment and ``features.json``
(per minute, timeline, whole lecture). Then the notes: :mod:`konspekt.report.data` decides what they
say, which ``report.json`` holds for machines; the PDF is laid out from that same data
(:mod:`konspekt.report.pdf`), so the two cannot disagree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from konspekt.contracts import Transcript, log
from konspekt.layout import VideoDir, atomic_path, read_json, write_json
from konspekt.report.data import load_report, report_data
from konspekt.stage import main_for

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def write_features(video: VideoDir, args: argparse.Namespace) -> list[Path]:
    """``features.csv`` and ``features.json`` from the voice and the transcript; none without the voice
    (the features stage failed: the report's section says so)."""
    if not (video.voice_npz.is_file() and video.voice_json.is_file()):
        log("no voice measurements (voice.npz): the notes go without voice features")
        return []
    from konspekt import prosody

    rows, features = prosody.measure(Transcript.load(video.transcript_json), prosody.Frames.load(video.voice_npz),
                                     read_json(video.voice_json), long_pause=args.long_pause,
                                     timeline_step_s=args.timeline_step, rate_window=args.rate_window)
    prosody.write_csv(video.features_csv, rows)
    write_json(video.features_json, features)
    return [video.features_csv, video.features_json]


def run(video: VideoDir, args: argparse.Namespace):
    # reportlab takes as long to import as everything else: keep --help fast
    from konspekt.report import pdf

    features = write_features(video, args)
    pdf.register_fonts(Path(args.font_dir))
    report = load_report(video)
    data = report_data(report)
    with atomic_path(video.report_pdf) as tmp:
        pages = pdf.render(data, report.features, tmp)
    write_json(video.report_json, {**data, "pages": pages})
    log(f"rendered {pages} pages for {video.title}")
    return [*features, video.report_pdf, video.report_json], {"pages": pages}


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--font-dir", type=Path, default=FONT_DIR, help="folder with the DejaVuSans TTF files")
    parser.add_argument("--timeline-step", type=_positive, default=1.0,
                        help="seconds per timeline point of the voice features (raised for long audio)")
    parser.add_argument("--long-pause", type=_positive, default=1.0,
                        help="a gap between words this long (s) counts as a long pause")
    parser.add_argument("--rate-window", type=_positive, default=30.0,
                        help="seconds of speech the timeline's speech rate is counted over")


main = main_for("render_pdf", __doc__.splitlines()[0], _configure, run,
                # the voice and the outline are optional: their absence is recorded, so their arrival reruns it
                reads=lambda video: [video.transcript_json, video.summary_json, video.voice_npz, video.voice_json,
                                     video.outline_json],
                packages=["reportlab", "numpy"])

if __name__ == "__main__":
    raise SystemExit(main())
