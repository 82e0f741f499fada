"""Tell the user what became of a video: published, quarantined (``failed/``) or held for a later run.

Off unless ``KONSPEKT_NOTIFY_URLS`` names apprise URLs (``mailto://``, ``mailtos://`` for SMTP,
``tgram://``, ``slack://``, ``json://``, ... see apprise's documentation); apprise is imported only
then. ``KONSPEKT_NOTIFY_ON`` picks the events (default: all three).

The ``finalize`` task calls :func:`send` with the video's :class:`~konspekt.inbox.Outcome`. A
notification is a courtesy: whatever goes wrong with it (apprise missing, a bad URL, a server down)
is logged as a warning and never fails or holds the video.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier

from konspekt.inbox import Outcome, record_path
from konspekt.layout import printable, read_json

EVENTS = ("published", "quarantined", "held")
EVENT_OF_STATUS = {"ok": "published", "failed": "quarantined", "held": "held"}
_NOTIFY_TYPE = {"published": "SUCCESS", "quarantined": "FAILURE", "held": "WARNING"}  # apprise.NotifyType's
# URLs are separated by commas or white space before the next "scheme://" (a comma inside one,
# as in mailto://...?to=a@x.org,b@y.org, stays)
_URL_SEPARATOR = re.compile(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.-]*://)")

log = logging.getLogger(__name__)


class NotificationError(RuntimeError):
    """No notification could be sent."""


def split_urls(text: str | Iterable[str]) -> list[str]:
    """The apprise URLs in ``KONSPEKT_NOTIFY_URLS``: separated by commas or white space."""
    parts = [text] if isinstance(text, str) else list(text)
    urls = []
    for part in parts:
        urls += [url.strip().strip(",").strip() for url in _URL_SEPARATOR.split(part.strip())]
    return [url for url in urls if url]


def split_events(text: str | Iterable[str]) -> tuple[str, ...]:
    """The event names in ``KONSPEKT_NOTIFY_ON`` ("published,quarantined,held"), lower case."""
    words = re.split(r"[\s,]+", text) if isinstance(text, str) else list(text)
    return tuple(word.strip().lower() for word in words if word.strip())


def event_of(outcome: Outcome) -> str:
    """published, quarantined or held."""
    return EVENT_OF_STATUS.get(outcome.status, outcome.status)


def duration(seconds: float | None) -> str:
    """``seconds`` for people: 42 s, 3 min 05 s, 1 h 02 min; unknown: "unknown"."""
    if seconds is None or seconds < 0:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def elapsed_seconds(claimed_at: str | None, now: datetime | None = None) -> float | None:
    """Seconds from the claim (its ISO time, as the claim record keeps it) to ``now``; None when unknown."""
    if not claimed_at:
        return None
    try:
        start = datetime.fromisoformat(claimed_at)
    except (TypeError, ValueError):
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - start).total_seconds()


def claimed_at(video_dir: Path) -> str | None:
    """When the video in ``video_dir`` (processing/<claim>/<video>) was claimed, from its claim record.

    Read before finalize moves the video: the record goes with it. None when there is none to read.
    """
    try:
        value = read_json(record_path(Path(video_dir))).get("claimed_at")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def message(outcome: Outcome, seconds: float | None = None, run_id: str | None = None) -> tuple[str, str]:
    """(title, body) of the notification for one finalized video. Pure: no Airflow, no apprise, no I/O.

    The body names the video, the status, the reason and what to do (unless published), where the
    result is (``output/<name>/report.pdf``, ``failed/<name>/``, or ``processing/<claim>/<video>/``)
    and the time from claim to finalize.
    """
    event = event_of(outcome)
    name = printable(outcome.name)
    lines = [f"Video: {name}", f"Status: {event}"]
    if outcome.status != "ok":
        where = f" ({outcome.stage})" if outcome.stage else ""
        lines.append(f"Reason: {' '.join(str(outcome.reason or 'unknown').split())}{where}")
        if outcome.hint:
            lines.append(f"What to do: {outcome.hint}")
    destination = printable(outcome.destination)
    if outcome.status == "ok":
        lines.append(f"Report: {destination}/report.pdf")
    elif outcome.status == "failed":
        lines.append(f"Moved to: {destination}/ (the file untouched, and error.json saying why)")
    else:
        lines.append(f"Waiting in: processing/{destination}/ (a later run retries it)")
    lines.append(f"Time taken: {duration(seconds)} (from claim to finalize)")
    if run_id:
        lines.append(f"Run: {run_id}")
    return f"konspekt: {name} {event}", "\n".join(lines)


class VideoNotifier(BaseNotifier):
    """An Airflow notifier that sends one video's outcome to apprise URLs.

    Built for one outcome; ``notifier.notify(context)`` (or ``notifier(context)``, as Airflow calls
    a callback) sends it to each URL when its event is among ``events``, and raises
    :class:`NotificationError` when some URL did not take it. Nothing is rendered as a template:
    a file name with ``{{`` stays text.
    """

    template_fields = ()

    def __init__(self, urls: str | Iterable[str], outcome: Outcome, seconds: float | None = None,
                 events: str | Iterable[str] = EVENTS):
        super().__init__()
        self.urls = split_urls(urls)
        self.outcome = outcome
        self.seconds = seconds
        self.events = split_events(events)

    @property
    def wanted(self) -> bool:
        return bool(self.urls) and event_of(self.outcome) in self.events

    def notify(self, context: Mapping[str, Any]) -> None:
        if not self.wanted:
            return
        try:
            import apprise  # only when notifications are on
        except ImportError as error:
            raise NotificationError("apprise is not installed: pip install apprise (konspekt's airflow extra "
                                    "and the compose Airflow image have it)") from error

        run = context.get("run_id") if context else None
        title, body = message(self.outcome, self.seconds, run_id=str(run) if run else None)
        kind = getattr(apprise.NotifyType, _NOTIFY_TYPE.get(event_of(self.outcome), "INFO"))
        failed = []
        for url in self.urls:  # one by one: a dead or wrong URL does not keep the message from the others
            target = apprise.Apprise()
            if not target.add(url):  # the URL itself is never logged: it may hold a password or token
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                failed.append(f"a {scheme}:// URL that apprise does not understand")
            elif not target.notify(title=title, body=body, notify_type=kind):
                failed.append(f"the {url.split('://', 1)[0]}:// URL did not take it (apprise's warning says why)")
        if failed:
            raise NotificationError(f"{len(failed)} of {len(self.urls)} URL(s) failed: {'; '.join(failed)}")


def send(outcome: Outcome, seconds: float | None, *, urls: str | Iterable[str],
         events: str | Iterable[str] = EVENTS, context: Mapping[str, Any] | None = None) -> bool:
    """Notify about ``outcome`` when configured; True when every URL took it. Never raises: a failure is a warning."""
    unknown = [event for event in split_events(events) if event not in EVENTS]
    if unknown:
        log.warning("KONSPEKT_NOTIFY_ON: %s unknown; the events are %s", ", ".join(unknown), ", ".join(EVENTS))
    try:
        notifier = VideoNotifier(urls, outcome, seconds, events)
        if not notifier.wanted:
            return False
        notifier.notify(context or {})
    except Exception as error:  # noqa: BLE001 - a notification never fails the video
        log.warning("notification about %r (%s) failed, the video is not affected: %s: %s",
                    printable(outcome.name), event_of(outcome), type(error).__name__, error)
        return False
    log.info("notified %d URL(s): %s is %s", len(notifier.urls), printable(outcome.name), event_of(outcome))
    return True
