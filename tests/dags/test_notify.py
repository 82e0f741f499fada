"""Notifications (konspekt_dags.notify): the message, apprise to a loopback JSON endpoint, and through Airflow."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import airflow_env, dags_test

from konspekt.inbox import BAD_FILE_HINT, Outcome, record_path
from konspekt.layout import write_json

DAGS = Path(__file__).resolve().parents[2] / "dags"
PUBLISHED = Outcome("ok", "Лекция 1.mp4", "output/Лекция 1")
QUARANTINED = Outcome("failed", "no sound.mp4", "failed/no sound", "the file has no audio track", "extract_audio",
                      BAD_FILE_HINT)
HELD = Outcome("held", "talk.mkv", "20260101T000000-abcdef/talk", "model tiny not in the cache", "transcribe",
               "download the model first; it waits in processing/ and a later run retries it (try 1 of 4)")


@pytest.fixture
def notify(monkeypatch):
    monkeypatch.syspath_prepend(str(DAGS))
    from konspekt_dags import notify

    return notify


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that keeps every JSON body POSTed to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()
                with receiver.got:
                    receiver.bodies.append(body)
                    receiver.paths.append(self.path)
                    receiver.got.notify_all()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/konspekt"

    def by_status(self) -> dict[str, dict]:
        found = {}
        for body in self.bodies:
            status = next(line.split(": ", 1)[1] for line in body["message"].splitlines() if line.startswith("Status"))
            found[status] = body
        return found


@pytest.fixture
def receiver():
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def dead_url() -> str:
    """A json:// URL on a loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"json://127.0.0.1:{port}/nobody"


# --- the message (pure) --------------------------------------------------------------------------------------------

def test_published_message_names_the_video_report_and_time(notify):
    title, body = notify.message(PUBLISHED, 192.4, run_id="manual__2026")
    assert title == "konspekt: Лекция 1.mp4 published"
    lines = body.splitlines()
    assert "Video: Лекция 1.mp4" in lines and "Status: published" in lines
    assert "Report: output/Лекция 1/report.pdf" in lines
    assert "Time taken: 3 min 12 s (from claim to finalize)" in lines
    assert "Run: manual__2026" in lines
    assert not any(line.startswith(("Reason", "What to do")) for line in lines)


def test_quarantined_message_says_why_and_where(notify):
    title, body = notify.message(QUARANTINED, 7)
    assert title == "konspekt: no sound.mp4 quarantined"
    lines = body.splitlines()
    assert "Status: quarantined" in lines
    assert "Reason: the file has no audio track (extract_audio)" in lines
    assert f"What to do: {BAD_FILE_HINT}" in lines
    assert any(line.startswith("Moved to: failed/no sound/") for line in lines)
    assert "Time taken: 7 s (from claim to finalize)" in lines


def test_held_message_says_it_waits(notify):
    _, body = notify.message(HELD, 3 * 3600 + 125)
    lines = body.splitlines()
    assert "Status: held" in lines
    assert "Reason: model tiny not in the cache (transcribe)" in lines
    assert any(line.startswith("Waiting in: processing/20260101T000000-abcdef/talk/") for line in lines)
    assert "Time taken: 3 h 02 min (from claim to finalize)" in lines


def test_unknown_time_and_odd_names(notify):
    odd = Outcome("ok", "bad \udcff {{ name }}.mp4", "output/bad \ufffd {{ name }}")
    title, body = notify.message(odd, None)
    assert "{{ name }}" in title and "\ufffd" in title  # not UTF-8 bytes become U+FFFD; no template is rendered
    assert "Time taken: unknown (from claim to finalize)" in body
    body.encode("utf-8")


def test_elapsed_time_from_the_claim_record(notify, tmp_path):
    video = tmp_path / "processing" / "claim" / "lecture"
    video.mkdir(parents=True)
    claimed = datetime(2026, 1, 1, 10, 0, 0, tzinfo=timezone.utc)
    write_json(record_path(video), {"name": "lecture.mp4", "claimed_at": claimed.isoformat(timespec="seconds")})
    stamp = notify.claimed_at(video)
    assert notify.elapsed_seconds(stamp, claimed + timedelta(minutes=2, seconds=5)) == 125
    assert notify.claimed_at(tmp_path / "processing" / "claim" / "gone") is None
    assert notify.elapsed_seconds(None) is None and notify.elapsed_seconds("yesterday") is None


def test_urls_and_events_are_split(notify):
    assert notify.split_urls(" json://a:1/x, tgram://1:t/2  mailtos://u:p@h?to=a@b.org,c@d.org ,") == [
        "json://a:1/x", "tgram://1:t/2", "mailtos://u:p@h?to=a@b.org,c@d.org"]
    assert notify.split_urls("") == []
    assert notify.split_events("Published, held") == ("published", "held")


def test_settings_read_the_environment_and_hide_the_urls(monkeypatch, tmp_path):
    monkeypatch.setenv("KONSPEKT_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", "fs://")
    monkeypatch.setenv("KONSPEKT_NOTIFY_URLS", "json://user:secret@127.0.0.1:1/x")
    monkeypatch.delenv("KONSPEKT_NOTIFY_ON", raising=False)
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(DAGS))
    from konspekt_dags.settings import Settings

    settings = Settings()
    assert settings.notify_urls == "json://user:secret@127.0.0.1:1/x"
    assert settings.notify_on == "published,quarantined,held"
    assert "secret" not in repr(settings)
    monkeypatch.delenv("KONSPEKT_NOTIFY_URLS")
    assert Settings().notify_urls == ""


# --- sending --------------------------------------------------------------------------------------------------------

def test_off_by_default_without_importing_apprise(notify, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "apprise", None)  # an import of apprise would now raise
    with caplog.at_level(logging.WARNING):
        for outcome in (PUBLISHED, QUARANTINED, HELD):
            assert notify.send(outcome, 1.0, urls="") is False
            assert notify.send(outcome, 1.0, urls=" , ") is False
    assert not caplog.records


def test_the_notifier_posts_to_a_json_url(notify, receiver):
    assert notify.send(QUARANTINED, 65, urls=receiver.url, context={"run_id": "manual__x"}) is True
    [body] = receiver.bodies
    assert receiver.paths == ["/konspekt"]
    assert body["title"] == "konspekt: no sound.mp4 quarantined" and body["type"] == "failure"
    for text in ("Video: no sound.mp4", "Status: quarantined", "the file has no audio track", "failed/no sound/",
                 "Time taken: 1 min 05 s", "Run: manual__x"):
        assert text in body["message"]


def test_it_is_an_airflow_notifier(notify, receiver):
    from airflow.sdk import BaseNotifier

    notifier = notify.VideoNotifier(receiver.url, PUBLISHED, 3.0)
    assert isinstance(notifier, BaseNotifier)
    notifier({"run_id": "r"})  # as Airflow calls a callback notifier
    [body] = receiver.bodies
    assert body["type"] == "success" and "Report: output/Лекция 1/report.pdf" in body["message"]
    with pytest.raises(notify.NotificationError):  # raises for a callback; send() turns it into a warning
        notify.VideoNotifier(dead_url(), PUBLISHED)({})


def test_only_the_chosen_events_are_sent(notify, receiver):
    assert notify.send(QUARANTINED, 1, urls=receiver.url, events="published,held") is False
    assert notify.send(HELD, 1, urls=receiver.url, events="published,held") is True
    assert [body["type"] for body in receiver.bodies] == ["warning"]


def test_a_failing_notification_is_a_warning(notify, caplog):
    with caplog.at_level(logging.WARNING):
        assert notify.send(PUBLISHED, 1, urls=dead_url()) is False  # nothing listens: refused
        assert notify.send(PUBLISHED, 1, urls="nonsense-without-scheme") is False
        assert notify.send(PUBLISHED, 1, urls="json://127.0.0.1:1/x", events="publishd") is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'Лекция 1.mp4' (published) failed" in w and "1 of 1 URL(s) failed" in w for w in warnings)
    assert any("a ?:// URL that apprise does not understand" in w for w in warnings)
    assert any("publishd unknown" in w for w in warnings)
    assert not any("nonsense" in w for w in warnings)  # a URL (it may hold a password) is never logged


def test_without_apprise_it_says_what_to_install(notify, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "apprise", None)
    with caplog.at_level(logging.WARNING):
        assert notify.send(QUARANTINED, 1, urls="json://127.0.0.1:1/x") is False
    assert any("apprise is not installed: pip install apprise" in r.getMessage() for r in caplog.records)


def test_one_dead_url_does_not_stop_the_others(notify, receiver, caplog):
    with caplog.at_level(logging.WARNING):
        assert notify.send(HELD, 1, urls=f"{dead_url()}, {receiver.url}") is False  # not sent to every URL
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["type"] == "warning"
    assert any("1 of 2 URL(s) failed: the json:// URL did not take it" in r.getMessage() for r in caplog.records)


# --- through Airflow ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_dag_run_notifies_published_and_quarantined(tmp_path, receiver, lecture_mp4, silent_video, tiny_en_model):
    """`airflow dags test` in local mode: a good lecture and a file without sound, one URL dead, one listening."""
    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    shutil.copy(lecture_mp4, data / "input" / "water cycle.mp4")
    shutil.copy(silent_video, data / "input" / "no sound.mp4")
    env = airflow_env(tmp_path, data, KONSPEKT_WHISPER_MODEL=tiny_en_model,
                      KONSPEKT_NOTIFY_URLS=f"{receiver.url} {dead_url()}")
    proc = dags_test(env, timeout=600)
    log = proc.stdout + proc.stderr
    (tmp_path / "dags-test.log").write_text(log)
    (tmp_path / "notifications.json").write_text(json.dumps(receiver.bodies, ensure_ascii=False, indent=1))
    assert (data / "output" / "water cycle" / "report.pdf").is_file(), log[-5000:]  # a dead URL failed nothing
    assert (data / "failed" / "no sound" / "no sound.mp4").is_file(), log[-5000:]
    sent = receiver.by_status()
    assert set(sent) == {"published", "quarantined"}, receiver.bodies
    published, quarantined = sent["published"]["message"], sent["quarantined"]["message"]
    assert "Video: water cycle.mp4" in published and "Report: output/water cycle/report.pdf" in published
    assert "Time taken: " in published and "unknown" not in published
    assert "Video: no sound.mp4" in quarantined and "no audio track" in quarantined
    assert "failed/no sound/" in quarantined and "(extract_audio)" in quarantined
    assert "(published) failed, the video is not affected" in log  # the dead URL: a warning in the task log
