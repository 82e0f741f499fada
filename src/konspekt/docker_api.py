"""Just enough of the Docker Engine API for ``konspekt doctor`` and the docker end-to-end tests.

Stdlib only: the Airflow image installs this package without extras, and the doctor also
runs on hosts without the docker SDK. The engine is spoken to over plain HTTP at a
``tcp://``, ``http://`` or ``unix://`` URL; every failure is a :class:`DockerError`.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any


class DockerError(Exception):
    """The engine cannot be reached, or answered with an error: the message says which and why."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def connector(url: str) -> Callable[[float], http.client.HTTPConnection]:
    """A new connection per request (timeout -> connection): the engine closes idle ones anyway."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "unix":
        return lambda timeout: _UnixConnection(parsed.path, timeout)
    if parsed.scheme not in {"tcp", "http"}:
        raise DockerError(f"unsupported Docker URL {url!r}: use tcp://host:port or unix:///path")
    if not parsed.hostname:
        raise DockerError(f"no host in {url!r}")
    host, port = parsed.hostname, parsed.port or 2375
    return lambda timeout: http.client.HTTPConnection(host, port, timeout=timeout)


class DockerAPI:
    def __init__(self, url: str, timeout: float = 10.0):
        self.url, self.timeout = url, timeout
        self._connect = connector(url)

    def request(self, method: str, path: str, body: object = None, *, timeout: float | None = None,
                expect: Sequence[int] = (200, 201, 204)) -> tuple[int, bytes]:
        conn = self._connect(timeout or self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerError(f"{self.url}: {exc or type(exc).__name__}") from exc
        finally:
            conn.close()
        if response.status not in expect:
            raise DockerError(f"{method} {short(path)}: HTTP {response.status} {message(data)}".strip())
        return response.status, data

    def get(self, path: str, **kwargs: Any) -> Any:
        return json.loads(self.request("GET", path, **kwargs)[1])

    def post(self, path: str, body: object = None, **kwargs: Any) -> Any:
        data = self.request("POST", path, body, **kwargs)[1]
        return json.loads(data) if data else None

    def ping(self) -> None:
        self.request("GET", "/_ping")

    def image(self, name: str) -> dict | None:
        status, data = self.request("GET", f"/images/{urllib.parse.quote(name, safe='')}/json", expect=(200, 404))
        return json.loads(data) if status == 200 else None

    def containers(self, all: bool = True) -> list[dict]:
        return self.get(f"/containers/json?all={int(all)}")

    def run(self, spec: dict, *, name: str, timeout: float) -> tuple[int, str]:
        """Create the container ``spec`` describes, run it to its end and remove it: (exit code, its output)."""
        container = self.post(f"/containers/create?name={name}", spec)["Id"]
        try:
            self.post(f"/containers/{container}/start")
            result = self.post(f"/containers/{container}/wait", timeout=timeout)
            logs = self.request("GET", f"/containers/{container}/logs?stdout=1&stderr=1")[1]
            return int(result.get("StatusCode", 1)), demux(logs)
        finally:
            try:
                self.request("DELETE", f"/containers/{container}?force=1", expect=(204, 404))
            except DockerError:
                pass  # the run's own outcome (or error) matters more than a leftover container


def short(path: str) -> str:
    """``path`` without its query, container ids cut to 12 digits as ``docker ps`` shows them."""
    return re.sub(r"[0-9a-f]{64}", lambda m: m.group(0)[:12], path.split("?")[0])


def message(data: bytes) -> str:
    """The engine's error message: JSON ``{"message": ...}``, or the start of whatever else it sent."""
    try:
        return json.loads(data).get("message", "")
    except (ValueError, AttributeError):
        return data.decode(errors="replace")[:300]


def demux(raw: bytes) -> str:
    """The text of a non-TTY container log stream (8-byte frame headers), or ``raw`` as is."""
    out, i = [], 0
    while i + 8 <= len(raw) and raw[i] in (0, 1, 2) and raw[i + 1:i + 4] == b"\0\0\0":
        size = struct.unpack(">I", raw[i + 4:i + 8])[0]
        out.append(raw[i + 8:i + 8 + size])
        i += 8 + size
    if i < len(raw):
        out.append(raw[i:])
    return b"".join(out).decode(errors="replace")
