"""The network as callbacks see it in tests: a DNS stand-in and a way out that reaches loopback only.

``Net`` replaces ``socket.getaddrinfo`` (names answer what a test says, lookup by lookup; any other
name is not found, and no query ever leaves the machine) and ``socket.socket.connect`` (loopback
connects as usual; a public address a test routes goes to the loopback receiver standing in for it;
every other address is refused). So a test can give a name a public address, and see the callback
arrive, while not one packet goes to that address. Imported by the callback test modules."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from konspekt import callbacks

PUBLIC = "93.184.216.34"  # a public address (example.com's, once): routed to loopback, never reached


class Net:
    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []
        self.routes: dict[tuple[str, int], int] = {}

    def name(self, host: str, *answers: str) -> None:
        """``host`` answers ``answers[0]`` at its first lookup, ``answers[1]`` at the second..., the
        last one from then on. An answer may be several addresses, comma-separated."""
        self.names[host] = list(answers)

    def route(self, address: str, port: int, loopback_port: int) -> None:
        """A connection to ``address:port`` goes to ``127.0.0.1:loopback_port`` instead."""
        self.routes[(address, port)] = loopback_port

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        host = host.decode() if isinstance(host, bytes) else host
        port = int(port) if port not in (None, "") else 0
        if host in self.names:
            self.lookups.append(host)
            answers = self.names[host]
            answer = answers[min(self.lookups.count(host), len(answers)) - 1]
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     (a, port) if ":" not in a else (a, port, 0, 0)) for a in answer.split(",")]
        try:  # an address (as inet_aton reads it, too): answered here, never by a DNS server
            return _REAL_GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: not known to the test's DNS stand-in") from None

    def connect(self, sock: socket.socket, address) -> None:
        host, port = address[0], address[1]
        self.connects.append((host, port))
        if (host, port) in self.routes:
            return _REAL_CONNECT(sock, ("127.0.0.1", self.routes[(host, port)]))
        if ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return _REAL_CONNECT(sock, address)
        raise ConnectionRefusedError(f"test network: {host}:{port} is not reachable from here")

    def connect_ex(self, sock: socket.socket, address) -> int:
        try:
            self.connect(sock, address)
        except OSError as exc:
            return exc.errno or 111
        return 0


_REAL_GETADDRINFO = socket.getaddrinfo
_REAL_CONNECT = socket.socket.connect


@pytest.fixture
def net(monkeypatch):
    """The test's network (see :class:`Net`); the service addresses callbacks looked up are forgotten."""
    net = Net()
    monkeypatch.setattr(socket, "getaddrinfo", net.getaddrinfo)
    # functions, not bound methods: set on the class, they get the socket as their first argument
    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: net.connect(sock, address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: net.connect_ex(sock, address))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    services = getattr(callbacks, "_SERVICES", None)
    if services is not None:
        services.clear()
    yield net
    if services is not None:
        services.clear()


class Hook:
    """A loopback HTTP server answering POSTs with the given statuses in turn (then 200). It records
    each request's path, JSON body, time, headers and raw body."""

    def __init__(self, statuses=(), delay=0.0, location=None, tls: ssl.SSLContext | None = None):
        self.statuses, self.delay, self.received = list(statuses), delay, []
        self.sni: list[str | None] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append((self.path, json.loads(body), time.monotonic(), dict(self.headers), body))
                time.sleep(hook.delay)
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.sni.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory(net):
    """Hooks by name: ``make(...)`` gives a :class:`Hook` whose ``url`` names ``hook<n>.example``, a
    public address on the test's network, routed to the hook."""
    made = []

    def make(*args, scheme="http", **kwargs):
        hook = Hook(*args, **kwargs)
        made.append(hook)
        hook.host = f"hook{len(made)}.example"
        net.name(hook.host, PUBLIC)
        net.route(PUBLIC, hook.port, hook.port)
        hook.url = f"{scheme}://{hook.host}:{hook.port}/hook"
        return hook

    yield make
    for hook in made:
        hook.close()
