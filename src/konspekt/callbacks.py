"""Tell an uploader's ``callback_url`` that its lecture was published or quarantined.

Delivery is best effort and off the pipeline's path: :func:`notify_in_background` returns at once,
and :func:`deliver` retries with exponential back-off and then gives up with a warning. Only
``http``/``https`` URLs are taken, redirects are not followed (a 30x could point anywhere), and by
default a URL whose host resolves to a loopback, private or link-local address is refused, so a
key holder cannot make the server post to the services beside it (the Docker API, Postgres...).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from konspekt import uploads

FINAL_STATES = ("published", "quarantined")
MAX_URL = 2000

log = logging.getLogger(__name__)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 30x is then an HTTPError: retried, never followed


_OPENER = urllib.request.build_opener(_NoRedirect)


def check_url(url: str, allow_private: bool = False) -> str:
    """``url`` if it may be called back; ValueError with the reason if not."""
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("callback_url must be an http:// or https:// URL with a host")
    if not allow_private:
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            raise ValueError(f"callback_url's host cannot be resolved ({exc})") from exc
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not address.is_global:
                raise ValueError(f"callback_url's host is a local or private address ({address})")
    return url


def deliver(url: str, payload: dict[str, Any], *, attempts: int = 5, base_delay: float = 2.0, timeout: float = 10.0,
            sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST ``payload`` as JSON; a 2xx is success. Retries after a connection error or any other
    status, waiting ``base_delay`` × 2^n between tries (2, 4, 8, 16 s by default). False: gave up."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "konspekt-callback"})
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return True
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if attempt + 1 < attempts:
            delay = base_delay * 2 ** attempt
            log.warning("callback for %s: %s; trying again in %.1f s", payload.get("id"), problem, delay)
            sleep(delay)
        else:
            log.warning("callback for %s: %s; giving up after %d tries", payload.get("id"), problem, attempts)
    return False


def notify(data_root: Path, upload_id: str, *, allow_private: bool = False, **delivery: Any) -> bool | None:
    """Call the upload's ``callback_url`` once it is published or quarantined, once per final state.
    None: nothing to do (no URL, not finished, told already); else whether it was delivered.
    The URL is checked again (:func:`check_url`): its host may resolve elsewhere by now."""
    upload = uploads.load(data_root, upload_id)
    if upload is None or not upload.callback_url:
        return None
    # The api-server runs several processes, each with a poller: one of them calls a given upload back.
    with open(uploads.record_file(data_root, upload_id).with_suffix(".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return _notify_locked(data_root, upload_id, allow_private, delivery)


def _notify_locked(data_root: Path, upload_id: str, allow_private: bool, delivery: dict[str, Any]) -> bool | None:
    upload = uploads.load(data_root, upload_id)
    if upload is None or not upload.callback_url:
        return None
    current = uploads.state(data_root, upload_id)
    if current["state"] not in FINAL_STATES or current["state"] in upload.notified:
        return None
    payload = {k: current.get(k) for k in ("id", "state", "name", "sha256", "downloads", "reason", "stage", "hint")
               if current.get(k) is not None}
    try:
        delivered = deliver(check_url(upload.callback_url, allow_private), payload, **delivery)
    except ValueError as exc:
        log.warning("callback for %s not sent: %s", upload_id, exc)
        delivered = False
    # Recorded either way: deliver retried already, and a URL that is down for good must not be
    # called again on every sweep.
    upload = uploads.load(data_root, upload_id) or upload
    upload.notified[current["state"]] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                         "delivered": delivered}
    uploads.save(data_root, upload)
    return delivered


def pending(data_root: Path) -> list[str]:
    """Uploads with a callback URL not yet told of a final state."""
    found = []
    for path in sorted(uploads.lectures_dir(data_root).glob("*.json")):
        upload = uploads.load(data_root, path.stem)
        if upload is not None and upload.callback_url and not set(FINAL_STATES) & set(upload.notified):
            found.append(upload.id)
    return found


def notify_pending(data_root: Path, *, allow_private: bool = False, **delivery: Any) -> None:
    """One sweep: call back every upload that has finished since the last sweep. Never raises."""
    for upload_id in pending(data_root):
        try:
            notify(data_root, upload_id, allow_private=allow_private, **delivery)
        except Exception:  # noqa: BLE001 - one upload's callback never stops the others
            log.exception("callback for %s failed", upload_id)


def notify_in_background(data_root: Path, upload_id: str | None = None, **delivery: Any) -> threading.Thread:
    """Run :func:`notify` (or, without an id, :func:`notify_pending`) in a daemon thread: a slow or
    dead callback URL never holds up the caller (finalize, a request)."""
    def run() -> None:
        try:
            if upload_id is None:
                notify_pending(data_root, **delivery)
            else:
                notify(data_root, upload_id, **delivery)
        except Exception:  # noqa: BLE001
            log.exception("callback for %s failed", upload_id or "pending uploads")

    thread = threading.Thread(target=run, name="konspekt-callback", daemon=True)
    thread.start()
    return thread
