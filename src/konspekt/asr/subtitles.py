"""Text, subtitle and table writers for a :class:`Transcript`.

Cues are cut at word boundaries (sentence ends preferred) so each one is short
enough to read, wrapped to at most two lines, and clipped so that no cue ever
overlaps the next one: players show overlapping cues stacked or drop them.
With diarization, a cue starts with ``[SPEAKER_00]`` wherever the speaker changes.

By default cues *aim* at two lines of 42 characters and 6 seconds (a word may overrun them).
A :class:`CueStyle` with a limit set makes it a hard one (whisperx's ``--max_line_width``,
``--max_line_count``): a cue is closed before the word that would break it, and lines are
filled to the width; only a single word longer than a limit can still exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass

from konspekt.contracts import Segment, Transcript, Word

MAX_CUE_CHARS, MAX_LINE_CHARS, MAX_CUE_SECONDS = 84, 42, 6.0
MIN_CUE_SECONDS = 0.001  # a cue must end after it starts, even for a zero-length word


@dataclass(frozen=True)
class CueStyle:
    """Hard limits on a cue; None keeps the soft default (the module constants)."""

    max_line_width: int | None = None  # characters a line
    max_line_count: int | None = None  # lines a cue
    max_cue_seconds: float | None = None

    @property
    def strict(self) -> bool:
        return any(v is not None for v in (self.max_line_width, self.max_line_count, self.max_cue_seconds))

    @property
    def width(self) -> int:
        return self.max_line_width or MAX_LINE_CHARS

    @property
    def lines(self) -> int:
        return self.max_line_count or 2

    @property
    def seconds(self) -> float:
        return self.max_cue_seconds or MAX_CUE_SECONDS

    @property
    def chars(self) -> int:  # the soft length at which a cue closes (84 by default)
        return self.width * self.lines if self.strict else MAX_CUE_CHARS


DEFAULT = CueStyle()


def timestamp(seconds: float, sep: str = ",") -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _spread(seg: Segment) -> list[Word]:
    """Words without times (a segment from elsewhere) spread evenly over the segment, for cutting only."""
    texts = seg.text.split()
    step = (seg.end - seg.start) / max(len(texts), 1)
    return [Word(seg.start + i * step, seg.start + (i + 1) * step, t) for i, t in enumerate(texts)]


def label(speaker: str) -> str:
    return f"[{speaker}] "


def _fill(text: str, width: int) -> list[str]:
    """Greedy lines of at most ``width`` characters (a longer word alone on its line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _fits(text: str, start: float, end: float, style: CueStyle) -> bool:
    """A cue of ``text`` from ``start`` to ``end`` keeps every limit the style sets."""
    return (len(_fill(text, style.width)) <= style.lines
            and (style.max_cue_seconds is None or end - start <= style.max_cue_seconds))


def _split_words(seg: Segment, style: CueStyle = DEFAULT) -> list[tuple[float, float, str]]:
    """Break a long segment into readable cues at word boundaries, preferring sentence ends."""
    out: list[tuple[float, float, str]] = []
    current: list[Word] = []
    # room for a speaker label, which any cue of a segment with a speaker may get
    prefix = label(seg.speaker) if seg.speaker and style.strict else ""
    for word in seg.words or _spread(seg):
        if style.strict and current and not _fits(prefix + " ".join(
                w.text for w in [*current, word]), current[0].start, word.end, style):
            out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
            current = []
        current.append(word)
        text = " ".join(w.text for w in current)
        full = len(text) >= style.chars or word.end - current[0].start >= style.seconds
        if full or (text.endswith((".", "?", "!")) and len(text) >= style.chars // 2):
            out.append((current[0].start, word.end, text))
            current = []
    if current:
        out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
    return out


def _wrap(text: str, style: CueStyle = DEFAULT) -> str:
    """At most two lines of about MAX_LINE_CHARS, split at the space nearest the middle; with limits
    set, two balanced lines where they fit, else lines filled to the width."""
    if style.strict:
        lines = _fill(text, style.width)
        if len(lines) == 2 and style.lines >= 2:
            balanced = _wrap(text).split("\n")
            lines = balanced if max(map(len, balanced)) <= style.width else lines
        return "\n".join(lines)
    if len(text) <= MAX_LINE_CHARS:
        return text
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1:]


def cues(transcript: Transcript, style: CueStyle = DEFAULT) -> list[tuple[float, float, str]]:
    """Subtitle cues of readable length, in time order, never overlapping the next one."""
    raw = sorted(((*c, seg.speaker) for seg in transcript.segments if seg.text.strip()
                  for c in _split_words(seg, style)), key=lambda c: c[0])
    out: list[tuple[float, float, str]] = []
    for i, (start, end, text, speaker) in enumerate(raw):
        if out:  # a cue starting inside the previous one starts where that one ends
            start = max(start, out[-1][1])
        if i + 1 < len(raw):
            end = min(end, raw[i + 1][0])
        if speaker and (i == 0 or raw[i - 1][3] != speaker):
            text = label(speaker) + text.strip()
        out.append((start, max(end, start + MIN_CUE_SECONDS), _wrap(text.strip(), style)))
    return out


def to_srt(transcript: Transcript, style: CueStyle = DEFAULT) -> str:
    """SubRip has no escapes: the text is as said (players that read ``<b>`` as a tag do so in any SRT);
    a cue never holds an empty line, which would end it, as :func:`cues` joins words with single spaces."""
    blocks = [f"{i}\n{timestamp(a)} --> {timestamp(b)}\n{text}\n"
              for i, (a, b, text) in enumerate(cues(transcript, style), 1)]
    return "\n".join(blocks)


def vtt_escape(text: str) -> str:
    """Cue text as WebVTT requires it: ``&``, ``<`` and ``>`` as character references. Unescaped, a player
    reads ``<b>`` as a tag (and hides it) and ``&`` as the start of one, and a ``-->`` in a cue's text as a
    timing line (the WebVTT spec forbids it there); escaped, every one shows as said."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(transcript: Transcript, style: CueStyle = DEFAULT) -> str:
    blocks = [f"{timestamp(a, '.')} --> {timestamp(b, '.')}\n{vtt_escape(text)}\n"
              for a, b, text in cues(transcript, style)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(transcript: Transcript) -> str:
    """One line per segment; with speakers, a ``SPEAKER_00:`` line opens each change of speaker."""
    lines: list[str] = []
    speaker = None
    for seg in transcript.segments:
        if not seg.text.strip():
            continue
        if seg.speaker and seg.speaker != speaker:
            lines.append(("\n" if lines else "") + f"{seg.speaker}:")
            speaker = seg.speaker
        lines.append(seg.text.strip())
    return "\n".join(lines) + "\n"


def to_tsv(transcript: Transcript) -> str:
    """One row per segment, times in integer milliseconds: the layout of openai-whisper's ``--output_format tsv``,
    with a fourth column, ``speaker``, when speakers were told apart."""
    speakers = transcript.diarization is not None and transcript.diarization.status == "ok"
    rows = ["start\tend\ttext" + ("\tspeaker" if speakers else "")]
    rows += [f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{' '.join(s.text.split())}"
             + (f"\t{s.speaker or ''}" if speakers else "")
             for s in transcript.segments if s.text.strip()]
    return "\n".join(rows) + "\n"


WRITERS = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}


def render(transcript: Transcript, style: CueStyle = DEFAULT) -> dict[str, str]:
    """Every format's text, by file extension; the subtitles cut by ``style``."""
    return {"txt": to_txt(transcript), "srt": to_srt(transcript, style), "vtt": to_vtt(transcript, style),
            "tsv": to_tsv(transcript)}
