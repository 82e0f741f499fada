"""Tell an uploader's ``callback_url`` that its lecture was published or quarantined.

Delivery is best effort and off the pipeline's path: the api-server's poller hands finished uploads
to a small :class:`Pool` of threads, and :func:`deliver` retries with exponential back-off and then
gives up with a warning. Where a callback may go (:func:`resolve`):

* only ``http``/``https`` URLs, without a user name or password, with an IPv4 host written as
  ``a.b.c.d`` (not ``2130706433`` or ``0x7f.1``), and never to the Docker or Kubernetes API ports;
* the host name is resolved **once**, every address it gives is checked, and the connection goes to
  exactly the checked address (``Host``, TLS SNI and the certificate check still use the name), so a
  name that answers a public address first and ``127.0.0.1`` second (DNS rebinding) gets nowhere;
  no proxy variable is read and redirects are not followed (a 30x could point anywhere);
* never to loopback, link-local (cloud metadata), unspecified, multicast or reserved addresses, nor
  to the deployment's own services (:data:`COMPOSE_SERVICES`, by name or by address); private (LAN)
  addresses only with ``allow_private``; and where an allow-list of hosts is set, only to those.

Each delivery has one deadline for connecting, sending and reading the answer's status and headers
(a receiver that drips a byte a second is cut off), and all tries of one upload share a budget.
A key with a callback secret (``konspekt keys callback-secret``) signs each body:
``X-Konspekt-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import hmac
import http.client
import io
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from konspekt import apikeys, uploads

FINAL_STATES = ("published", "quarantined")
MAX_URL = 2000
DEFAULT_TIMEOUT = 10.0  # one delivery: connect, TLS, send, and the answer's status line and headers
DEFAULT_BUDGET = 60.0  # every try of one upload's callback, and the waits between them
SIGNATURE_HEADER = "X-Konspekt-Signature"

# The services of docker-compose.yml (tests/api/test_api_callbacks.py checks that they agree). Their
# names resolve on the compose network, so a callback never goes to one of them, by name or by address.
COMPOSE_SERVICES = frozenset({
    "postgres", "docker-proxy", "image-builder", "airflow-init", "models", "airflow-apiserver",
    "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "redis", "registry",
    "image-publisher", "worker", "doctor", "docker-host", "registry-auth"})
# Names that mean this machine, its host, its cloud's metadata service or the Kubernetes API.
INTERNAL_NAMES = frozenset({
    "localhost", "host.docker.internal", "gateway.docker.internal", "metadata", "metadata.google.internal",
    "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
# Docker's API (2375, 2376 with TLS, 2377 swarm), etcd (2379, 2380), the Kubernetes API (6443) and the
# kubelet (10250; 10255 read-only), kube-proxy (10256), controller managers (10257, the cloud's 10258) and
# the scheduler (10259).
CONTROL_PORTS = frozenset({2375, 2376, 2377, 2379, 2380, 6443, 10250, 10255, 10256, 10257, 10258, 10259})
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.x.x.x to this machine
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# "2130706433", "0x7f.1", "0177.0.0.1", "127.1": what inet_aton takes for 127.0.0.1. A real name's
# last label is never a number, so a host ending in one is an address, and must be written a.b.c.d.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
# A container's name: <project>-<service>-<n> (compose v2) or <project>_<service>_<n> (v1)
_CONTAINER_NAME = re.compile(rf"[a-z0-9_.-]+[-_]({'|'.join(re.escape(s) for s in sorted(COMPOSE_SERVICES))})[-_][0-9]+")
_SERVICE_LOOKUP_SECONDS, _SERVICE_CACHE_SECONDS = 2.0, 60.0

log = logging.getLogger(__name__)


class Refused(ValueError):
    """The URL may not be called back: trying again would not change that."""


@dataclass(frozen=True)
class Policy:
    """Where callbacks may go. ``allow_private``: private (LAN) addresses too (loopback, link-local and
    the deployment's own services never). ``hosts``: when not empty, only these names; ``*.example.org``
    is any name below example.org."""

    allow_private: bool = False
    hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, allow_private: bool = False, hosts: str | Iterable[str] = ()) -> Policy:
        """From the settings: ``hosts`` as ``KONSPEKT_API_CALLBACK_HOSTS`` holds them (comma-separated)."""
        names = hosts.replace(",", " ").split() if isinstance(hosts, str) else hosts
        return cls(allow_private, tuple(_plain_name(n) for n in names if _plain_name(n)))

    def lists(self, host: str) -> bool:
        return any(host == entry or (entry.startswith("*.") and host.endswith(entry[1:])) for entry in self.hosts)


@dataclass(frozen=True)
class Target:
    """A checked callback URL: the name for ``Host`` and TLS, and the one address it may connect to."""

    scheme: str
    host: str  # the name (IDNA), or an address
    port: int
    address: str  # the checked address: the connection goes here and nowhere else
    path: str  # path and query, as the caller gave them


def _plain_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def check_url(url: str, policy: Policy = Policy()) -> str:
    """``url`` if it may be called back now; ValueError with the reason if not."""
    try:
        resolve(url, policy)
    except OSError as exc:  # socket.gaierror: the name does not resolve
        raise Refused(f"callback_url's host cannot be resolved ({exc})") from exc
    return url


def resolve(url: str, policy: Policy = Policy()) -> Target:
    """Check ``url``, resolve its host once and check every address; :class:`Refused` if it may not
    be called, OSError if the name does not resolve (now). The target is pinned to the first address."""
    scheme, host, port, path = _parse(url, policy)
    literal = _address(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise OSError(f"{host} has no address")
    for address in addresses:
        reason = _refused_address(address, policy)
        if reason:
            raise Refused(f"callback_url's host is {reason} ({address})")
    return Target(scheme, host, port, str(addresses[0]), path)


def _parse(url: str, policy: Policy) -> tuple[str, str, int, str]:
    if len(url) > MAX_URL:
        raise Refused(f"callback_url is longer than {MAX_URL} characters")
    if re.search(r"[\x00-\x20\x7f\\]", url):  # what parsers disagree on; http.client would refuse it too
        raise Refused("callback_url must not hold spaces, control characters or backslashes")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("callback_url must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise Refused("callback_url must not hold a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = _plain_name(parts.hostname).encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise Refused(f"callback_url's host or port is not valid ({exc})") from exc
    if port in CONTROL_PORTS:
        raise Refused(f"callback_url's port {port} is a Docker or Kubernetes API port")
    if _address(host) is None and _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        raise Refused("callback_url's host is an address in a form other than a.b.c.d")
    if _internal_name(host):
        raise Refused(f"callback_url's host {host} is a service of this deployment or this machine")
    if policy.hosts and not policy.lists(host):
        raise Refused(f"callback_url's host {host} is not in KONSPEKT_API_CALLBACK_HOSTS")
    path = parts.path or "/"
    return parts.scheme, host, port, path + (f"?{parts.query}" if parts.query else "")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _internal_name(host: str) -> bool:
    return (host in COMPOSE_SERVICES or host in INTERNAL_NAMES or host.endswith(".localhost")
            or host.startswith("airflow-")  # any Airflow service a later compose file adds
            or _CONTAINER_NAME.fullmatch(host) is not None)


def _carried(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[Any]:
    """The addresses a connection to ``address`` may really reach: an IPv6 address carrying an IPv4
    one (``::ffff:127.0.0.1``, ``::127.0.0.1``, NAT64, 6to4, Teredo) is checked as that one too."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    found: list[Any] = [address]
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: Policy) -> str | None:
    """Why a callback may not go to ``address``; None if it may."""
    carried_addresses = _carried(address)
    for carried in carried_addresses:
        if (carried.is_loopback or carried.is_link_local or carried.is_unspecified or carried.is_multicast
                or carried.is_reserved or carried in _THIS_NETWORK):
            return "a loopback, link-local, multicast or reserved address"
        if not policy.allow_private and not carried.is_global:
            return "a local or private address (KONSPEKT_API_PRIVATE_CALLBACKS allows a LAN)"
    if policy.allow_private and not all(a.is_global for a in carried_addresses):  # a service's address is private
        service = next(filter(None, (_SERVICES.name_of(a) for a in carried_addresses)), None)
        if service:
            return f"the address of {service}, a service of this deployment"
    return None


class _ServiceAddresses:
    """The addresses the deployment's service names resolve to here (on the compose network; elsewhere
    they do not resolve and are skipped). Looked up at most once a minute, each name in its own thread,
    waiting :data:`_SERVICE_LOOKUP_SECONDS` in all, so a slow resolver never holds a request long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[str, str] = {}
        self._at = -float("inf")

    def name_of(self, address: Any) -> str | None:
        with self._lock:
            if time.monotonic() - self._at > _SERVICE_CACHE_SECONDS:
                self._found, self._at = self._look_up(), time.monotonic()
            return self._found.get(str(address))

    def clear(self) -> None:
        with self._lock:
            self._found, self._at = {}, -float("inf")

    @staticmethod
    def _look_up() -> dict[str, str]:
        found: dict[str, str] = {}

        def look_up(name: str) -> None:
            try:
                for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM):
                    found[str(ipaddress.ip_address(str(info[4][0]).split("%")[0]))] = name
            except (OSError, UnicodeError, ValueError):
                pass  # not a service here (another profile, or not in compose at all)

        names = sorted(COMPOSE_SERVICES | INTERNAL_NAMES - {"localhost"})
        threads = [threading.Thread(target=look_up, args=(n,), daemon=True, name="konspekt-callback-dns")
                   for n in names]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + _SERVICE_LOOKUP_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return dict(found)


_SERVICES = _ServiceAddresses()


# --- one delivery -----------------------------------------------------------------------------------

def open_socket(address: str, port: int, timeout: float) -> socket.socket:
    """The one place a callback's connection is opened: to the checked address, never to a name (no
    second lookup, no proxy)."""
    return socket.create_connection((address, port), timeout=timeout)


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.at = seconds, time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the receiver took longer than {self.seconds:g} s")
        return left


class _DeadlineSocket:
    """The socket of one delivery as http.client uses it: each send and each read gets only the time
    that is left of the delivery's deadline. A socket timeout alone is per read: a receiver dripping a
    byte a second would never reach it."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self.sock, self.deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(self.deadline.left())
        self.sock.sendall(data)  # one sendall has one timeout in all (Python 3.5+)

    def recv_into(self, buffer: Any) -> int:
        self.sock.settimeout(self.deadline.left())
        return self.sock.recv_into(buffer)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        self.sock.close()


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.sock.recv_into(buffer)


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP or HTTPS to the target's checked address, with ``Host``, TLS SNI and the certificate check
    for its name. http.client reads no proxy variable."""

    def __init__(self, target: Target, deadline: _Deadline, context: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port)
        self.target, self.deadline = target, deadline
        self.context = context or ssl.create_default_context()
        self.default_port = 443 if target.scheme == "https" else 80  # Host leaves the default port out

    def connect(self) -> None:
        sock = open_socket(self.target.address, self.target.port, self.deadline.left())
        try:
            if self.target.scheme == "https":
                sock.settimeout(self.deadline.left())  # the whole handshake gets one timeout
                sock = self.context.wrap_socket(sock, server_hostname=self.target.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self.deadline)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Konspekt-Signature`` value: the time (so a receiver can refuse replays) and an
    HMAC-SHA256 over ``"<time>." + body``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def post_once(url: str, body: bytes, *, policy: Policy = Policy(), secret: str | None = None,
              timeout: float = DEFAULT_TIMEOUT, ssl_context: ssl.SSLContext | None = None) -> int:
    """POST ``body`` to ``url`` once, within ``timeout`` seconds in all; the answer's status.
    The URL is checked and resolved here, and the connection pinned to the address checked."""
    target = resolve(url, policy)
    deadline = _Deadline(timeout)
    headers = {"Content-Type": "application/json", "User-Agent": "konspekt-callback", "Connection": "close"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
    connection = _PinnedConnection(target, deadline, ssl_context)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        return connection.getresponse().status  # the body is not read: the status is the answer
    finally:
        connection.close()


def deliver(url: str, payload: dict[str, Any], *, policy: Policy = Policy(), secret: str | None = None,
            attempts: int = 5, base_delay: float = 2.0, timeout: float = DEFAULT_TIMEOUT,
            budget: float = DEFAULT_BUDGET, sleep: Callable[[float], None] = time.sleep,
            ssl_context: ssl.SSLContext | None = None) -> bool:
    """POST ``payload`` as JSON; a 2xx is success. Retries after a connection error, a timeout or any
    other status, waiting ``base_delay`` × 2^n between tries (2, 4, 8, 16 s by default), as long as
    ``budget`` seconds last for all of it. False: gave up, or the URL may not be called (no retry)."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    give_up_at = time.monotonic() + budget
    for attempt in range(attempts):
        try:
            status = post_once(url, body, policy=policy, secret=secret, ssl_context=ssl_context,
                               timeout=min(timeout, max(0.001, give_up_at - time.monotonic())))
            if 200 <= status < 300:
                return True
            problem = f"HTTP {status}"
        except Refused as exc:
            log.warning("callback for %s not sent: %s", payload.get("id"), exc)
            return False
        except (OSError, http.client.HTTPException, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        delay = base_delay * 2 ** attempt
        if attempt + 1 < attempts and time.monotonic() + delay < give_up_at:
            log.warning("callback for %s: %s; trying again in %.1f s", payload.get("id"), problem, delay)
            sleep(delay)
        else:
            log.warning("callback for %s: %s; giving up after %d tries", payload.get("id"), problem, attempt + 1)
            return False
    return False


# --- which uploads, and from which threads ----------------------------------------------------------

def notify(data_root: Path, upload_id: str, *, policy: Policy = Policy(), keys_path: Path | None = None,
           **delivery: Any) -> bool | None:
    """Call the upload's ``callback_url`` once it is published or quarantined, once per final state,
    signed with its key's callback secret. None: nothing to do (no URL, not finished, told already);
    else whether it was delivered. The URL is checked again: its host may resolve elsewhere by now."""
    upload = uploads.load(data_root, upload_id)
    if upload is None or not upload.callback_url:
        return None
    # The api-server runs several processes, each with a poller: one of them calls a given upload back.
    lock_path = uploads.record_file(data_root, upload_id).with_suffix(".lock")
    with os.fdopen(os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return _notify_locked(data_root, upload_id, policy, keys_path, delivery)


def _notify_locked(data_root: Path, upload_id: str, policy: Policy, keys_path: Path | None,
                   delivery: dict[str, Any]) -> bool | None:
    upload = uploads.load(data_root, upload_id)
    if upload is None or not upload.callback_url:
        return None
    current = uploads.state(data_root, upload_id)
    if current["state"] not in FINAL_STATES or current["state"] in upload.notified:
        return None
    payload = {k: current.get(k) for k in ("id", "state", "name", "sha256", "downloads", "reason", "stage", "hint")
               if current.get(k) is not None}
    secret = apikeys.callback_secret(keys_path or apikeys.default_store(data_root), upload.key_id)
    if not secret:
        log.warning("callback for %s goes unsigned: key %s has no callback secret (konspekt keys "
                    "callback-secret %s makes one)", upload_id, upload.key_id, upload.key_id)
    delivered = deliver(upload.callback_url, payload, policy=policy, secret=secret, **delivery)
    # Recorded either way: deliver retried already, and a URL that is down for good must not be
    # called again on every sweep.
    upload = uploads.load(data_root, upload_id) or upload
    upload.notified[current["state"]] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                         "delivered": delivered}
    uploads.save(data_root, upload)
    return delivered


def _pending_uploads(data_root: Path) -> list[uploads.Upload]:
    found = []
    for path in sorted(uploads.lectures_dir(data_root).glob("*.json")):
        upload = uploads.load(data_root, path.stem)
        if upload is not None and upload.callback_url and not set(FINAL_STATES) & set(upload.notified):
            found.append(upload)
    return found


def pending(data_root: Path) -> list[str]:
    """Uploads with a callback URL not yet told of a final state."""
    return [upload.id for upload in _pending_uploads(data_root)]


class Pool:
    """Delivers callbacks from ``workers`` threads, so a slow or dead receiver holds one of them, not
    every other upload's callback. At most ``per_key`` uploads of one key are queued or running at
    once; the others wait for a later round, so one key's dead URLs cannot take every thread."""

    def __init__(self, workers: int = 4, per_key: int = 2) -> None:
        self.per_key = per_key
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="konspekt-callback")
        self._busy: dict[str, str] = {}  # upload id -> key id, queued or running
        self._lock = threading.Lock()

    def submit(self, upload: uploads.Upload, work: Callable[[], Any]) -> concurrent.futures.Future[Any] | None:
        """Run ``work`` for ``upload`` in a thread; None: it is running already, or its key has
        ``per_key`` uploads in the pool."""
        with self._lock:
            if upload.id in self._busy or sum(k == upload.key_id for k in self._busy.values()) >= self.per_key:
                return None
            self._busy[upload.id] = upload.key_id
        try:
            future = self._executor.submit(work)
        except BaseException:
            self._done(upload.id)
            raise
        future.add_done_callback(lambda _: self._done(upload.id))
        return future

    def _done(self, upload_id: str) -> None:
        with self._lock:
            self._busy.pop(upload_id, None)

    def close(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def notify_pending(data_root: Path, *, pool: Pool | None = None, **options: Any) -> None:
    """One round: hand every upload finished since the last round to ``pool`` and return (the poller
    does so every few seconds); without a pool, deliver them from a pool of its own and wait. Never raises
    for one upload's callback."""
    def work(upload_id: str) -> Callable[[], None]:
        def run() -> None:
            try:
                notify(data_root, upload_id, **options)
            except Exception:  # noqa: BLE001 - one upload's callback never stops the others
                log.exception("callback for %s failed", upload_id)
        return run

    if pool is not None:
        for upload in _pending_uploads(data_root):
            pool.submit(upload, work(upload.id))
        return
    with Pool() as own:
        left = _pending_uploads(data_root)
        while left:  # per_key of a key at a time: what did not fit goes in once those are done
            submitted = {u.id: f for u in left if (f := own.submit(u, work(u.id))) is not None}
            concurrent.futures.wait(submitted.values())
            left = [u for u in left if u.id not in submitted]


def notify_in_background(data_root: Path, upload_id: str | None = None, **options: Any) -> threading.Thread:
    """Run :func:`notify` (or, without an id, :func:`notify_pending`) in a daemon thread: a slow or
    dead callback URL never holds up the caller (finalize, a request)."""
    def run() -> None:
        try:
            if upload_id is None:
                notify_pending(data_root, **options)
            else:
                notify(data_root, upload_id, **options)
        except Exception:  # noqa: BLE001
            log.exception("callback for %s failed", upload_id or "pending uploads")

    thread = threading.Thread(target=run, name="konspekt-callback", daemon=True)
    thread.start()
    return thread
