"""Text, subtitle and table writers for a :class:`Transcript`.

Cues are cut at word boundaries (sentence ends preferred) so each one is short
enough to read, wrapped to at most two lines, and clipped so that no cue ever
overlaps the next one: players show overlapping cues stacked or drop them.
With diarization, a cue starts with ``[SPEAKER_00]`` wherever the speaker changes.
"""

from __future__ import annotations

from konspekt.contracts import Segment, Transcript, Word

MAX_CUE_CHARS, MAX_LINE_CHARS, MAX_CUE_SECONDS = 84, 42, 6.0
MIN_CUE_SECONDS = 0.001  # a cue must end after it starts, even for a zero-length word


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


def _split_words(seg: Segment) -> list[tuple[float, float, str]]:
    """Break a long segment into readable cues at word boundaries, preferring sentence ends."""
    out, current = [], []
    for word in seg.words or _spread(seg):
        current.append(word)
        text = " ".join(w.text for w in current)
        full = len(text) >= MAX_CUE_CHARS or word.end - current[0].start >= MAX_CUE_SECONDS
        if full or (text.endswith((".", "?", "!")) and len(text) >= MAX_CUE_CHARS // 2):
            out.append((current[0].start, word.end, text))
            current = []
    if current:
        out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
    return out


def _wrap(text: str) -> str:
    """At most two lines of about MAX_LINE_CHARS, split at the space nearest the middle."""
    if len(text) <= MAX_LINE_CHARS:
        return text
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1:]


def cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """Subtitle cues of readable length, in time order, never overlapping the next one."""
    raw = sorted(((*c, seg.speaker) for seg in transcript.segments if seg.text.strip() for c in _split_words(seg)),
                 key=lambda c: c[0])
    out: list[tuple[float, float, str]] = []
    for i, (start, end, text, speaker) in enumerate(raw):
        if out:  # a cue starting inside the previous one starts where that one ends
            start = max(start, out[-1][1])
        if i + 1 < len(raw):
            end = min(end, raw[i + 1][0])
        if speaker and (i == 0 or raw[i - 1][3] != speaker):
            text = label(speaker) + text.strip()
        out.append((start, max(end, start + MIN_CUE_SECONDS), _wrap(text.strip())))
    return out


def to_srt(transcript: Transcript) -> str:
    blocks = [f"{i}\n{timestamp(a)} --> {timestamp(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues(transcript), 1)]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [f"{timestamp(a, '.')} --> {timestamp(b, '.')}\n{text}\n" for a, b, text in cues(transcript)]
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
