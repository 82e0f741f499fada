"""The report's charts as PNG bytes (matplotlib without pyplot: no global state, no GUI backend).

Both read ``features.json`` as render_pdf writes it (:mod:`konspekt.prosody`); matplotlib is imported
inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

CHART_POINTS = 1500  # a denser timeline only slows matplotlib without a visible difference


def _series(values: list | None, n: int):
    import numpy as np

    a = np.array([math.nan if v is None else float(v) for v in (values or [])[:n]], dtype=float)
    return np.concatenate([a, np.full(n - len(a), math.nan)])


def _binned(a, points: int):
    """Means over ``points`` equal bins; NaN (unvoiced, no data) stays out of the mean."""
    import numpy as np

    if len(a) <= points:
        return a
    edges = np.linspace(0, len(a), points + 1).astype(int)
    out = []
    for i, j in itertools.pairwise(edges):
        finite = a[i:j][np.isfinite(a[i:j])]
        out.append(finite.mean() if finite.size else math.nan)
    return np.array(out)


def _smooth(a, window: int):
    """Centred moving mean over ``window`` points, ignoring NaN."""
    import numpy as np

    ok = np.isfinite(a)
    box = np.ones(window)
    total = np.convolve(np.where(ok, a, 0.0), box, "same")[: len(a)]
    count = np.convolve(ok.astype(float), box, "same")[: len(a)]
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _style_axes(ax) -> None:
    ax.grid(True, linewidth=0.3, alpha=0.6)
    ax.tick_params(labelsize=7)
    ax.yaxis.label.set_size(8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def timeline_png(timeline: dict[str, Any], starts: list[float], width_in: float, height_in: float) -> bytes | None:
    """Speech rate and loudness over time, sections shaded in turn and numbered; None without data."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    n = len(timeline.get("time") or [])
    if n < 2:
        return None
    time = _binned(_series(timeline["time"], n), CHART_POINTS)
    minutes = time[-1] > 180
    scale = 60.0 if minutes else 1.0
    x = time / scale
    fig = Figure(figsize=(width_in, height_in), dpi=150)
    axes = fig.subplots(2, 1, sharex=True)
    loudness = _binned(_series(timeline.get("loudness"), n), CHART_POINTS)
    axes[1].plot(x, loudness, color="#1f77b4", linewidth=0.5, alpha=0.3)
    window = max(1, round(len(x) * float(timeline.get("rate_window") or 30) / max(time[-1], 1)))
    for ax, values, label, colour in (
            (axes[0], _binned(_series(timeline.get("speech_rate_wps"), n), CHART_POINTS), "speech rate, words/s",
             "#2a7f62"),
            (axes[1], _smooth(loudness, window), "loudness", "#1f77b4")):  # the trend, over the raw line
        ax.plot(x, values, color=colour, linewidth=1.1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        _style_axes(ax)
        edges = [s / scale for s in starts] + [x[-1]]
        for i, (a, b) in enumerate(itertools.pairwise(edges)):
            if i % 2:
                ax.axvspan(a, b, color="#eef2f7", zorder=0)
            if i:
                ax.axvline(a, color="#888888", linewidth=0.8, linestyle="--")
    if len(starts) > 1:
        for i, (a, b) in enumerate(itertools.pairwise(edges), 1):
            axes[0].annotate(str(i), ((a + b) / 2, 1.0), xycoords=("data", "axes fraction"), ha="center",
                             va="bottom", fontsize=7, color="#444444")
    axes[1].set_xlabel("time, min" if minutes else "time, s", fontsize=8)
    axes[1].set_xlim(x[0], x[-1])
    fig.tight_layout(h_pad=0.6)
    return _png(fig)


def pitch_png(features: dict[str, Any], width_in: float, height_in: float) -> bytes | None:
    """The distribution of pitch over voiced 10 ms frames, with its mean marked; None without pitch."""
    import numpy as np
    from matplotlib.figure import Figure

    hist = features.get("pitch_histogram") or {}
    edges, counts = np.array(hist.get("edges_hz") or [], float), np.array(hist.get("counts") or [], float)
    if len(counts) == 0 or counts.sum() == 0:
        return None
    fig = Figure(figsize=(width_in, height_in), dpi=150)
    ax = fig.subplots()
    ax.stairs(100 * counts / counts.sum(), edges, fill=True, color="#c0504d", alpha=0.85)
    mean = (features.get("summary") or {}).get("pitch_mean_hz")
    if mean:
        ax.axvline(mean, color="#333333", linewidth=0.9, linestyle="--")
        ax.annotate(f"mean {mean:.0f} Hz", (mean, 0.97), xycoords=("data", "axes fraction"), xytext=(4, 0),
                    textcoords="offset points", fontsize=7, va="top")
    share = np.cumsum(counts) / counts.sum()  # octave errors leave stray frames far out: show 1-99 %
    lo, hi = int(np.searchsorted(share, 0.01)), int(np.searchsorted(share, 0.99))
    ax.set_xlim(edges[max(lo - 2, 0)], edges[min(hi + 3, len(edges) - 1)])
    ax.set_xlabel("pitch, Hz", fontsize=8)
    ax.set_ylabel("% of voiced time", fontsize=8)
    _style_axes(ax)
    fig.tight_layout()
    return _png(fig)
