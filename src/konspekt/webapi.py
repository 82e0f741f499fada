"""The HTTP upload API: send a lecture, follow it, download its notes. ``create_app`` builds it.

    POST /lectures                    the video as the raw body (name in X-Filename or ?filename=),
                                      or multipart/form-data with a ``file`` part; an X-Callback-URL
                                      header (or a ``callback_url`` form field; ?callback_url= of old
                                      clients is taken too, and kept out of access logs) to be told
                                      when it is done (konspekt.callbacks)
    GET  /lectures                    this key's lectures, newest first, 50 at a time (?limit= up to 200);
                                      the next page's URL in the Link header (rel="next", ?cursor=)
    GET  /lectures/{id}               where it is: waiting, processing (stage), published, quarantined
    GET  /lectures/{id}/report.pdf    and report.json, transcript.{txt,srt,vtt,json}, once published

Every request needs ``X-API-Key: kp_<id>_<secret>`` (``konspekt keys create``). A missing, wrong or
revoked key is 401; another key's lecture is 404, as if it did not exist. The key is checked first: a
valid one always passes; refused ones get 429 with Retry-After once their (address, key id), or their
address, refused too many. The body is streamed to disk (:mod:`konspekt.uploads`), never held in memory;
past ``max_bytes`` the answer is 413, short of disk 507, a key over its uploads at once or its bytes a
day 429, a client that stops sending 408, and nothing stays. No docs or OpenAPI schema unless ``docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Hashable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from konspekt import apikeys, callbacks, uploads
from konspekt.apikeys import KeyRecord

try:  # python-multipart comes with FastAPI's "standard" extra, not with FastAPI itself
    import python_multipart
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header
except ImportError:  # pragma: no cover - then only the raw body is taken
    python_multipart = None  # type: ignore[assignment]
    FormParserError = ValueError  # type: ignore[assignment,misc]

CALLBACK_SCOPE_KEY = "konspekt.callback_url"  # where ?callback_url= goes once out of the query string

# The defaults of the settings (konspekt_dags.settings) that the plugin passes in
DEFAULT_MAX_BYTES = 20 * 10**9  # as KONSPEKT_MAX_FILE_GB's default: a claim would quarantine a larger file
DEFAULT_MIN_FREE_BYTES = 2 * 10**9  # KONSPEKT_MIN_FREE_GB
DEFAULT_MAX_BYTES_PER_DAY = 50 * 10**9  # KONSPEKT_API_MAX_GB_PER_DAY
MAX_FIELD_BYTES = 4096  # a form field (callback_url) is small; a file part is the only large one
MAX_FORM_PARTS = 8  # the file and a few fields
MAX_FORM_BYTES = 64 * 1024  # everything of a form but the file's bytes: part headers, fields, boundaries
DEFAULT_PAGE, MAX_PAGE = 50, 200  # lectures per GET /lectures: each costs a few small reads

WEB = Path(__file__).parent / "web"
PAGE = WEB / "index.html"
PAGE_ASSETS = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
# The page loads nothing but its own files: no inline script, no other origin, never in a frame
PAGE_CSP = ("default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
log = logging.getLogger("konspekt.webapi")


@dataclass(frozen=True)
class Limits:
    """What one upload may take (see :func:`create_app`); 0 turns a limit off."""
    max_bytes: int = DEFAULT_MAX_BYTES
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    max_concurrent: int = 2
    max_bytes_per_day: int = DEFAULT_MAX_BYTES_PER_DAY
    idle_timeout: float = 60.0


class OverQuota(Exception):
    """The key sent its bytes for the day."""


class IdleTimeout(Exception):
    """The client sent nothing for ``idle_timeout`` seconds."""


@dataclass
class _Bucket:
    tokens: float
    at: float


class _Buckets:
    """Token buckets by name: ``capacity`` tokens at most, refilled at ``capacity`` per ``window`` seconds."""

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity, self.rate = float(capacity), capacity / window
        self._buckets: dict[Hashable, _Bucket] = {}

    def _tokens(self, bucket: _Bucket, now: float) -> float:
        return min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)

    def wait(self, name: Hashable, now: float) -> float:
        """Seconds until ``name`` has a token; 0 when it has one now."""
        bucket = self._buckets.get(name)
        tokens = self.capacity if bucket is None else self._tokens(bucket, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, name: Hashable, now: float) -> None:
        bucket = self._buckets.setdefault(name, _Bucket(self.capacity, now))
        bucket.tokens, bucket.at = self._tokens(bucket, now) - 1, now
        if len(self._buckets) > 10_000:  # forget the names whose buckets are full again
            for full in [n for n, b in self._buckets.items() if self._tokens(b, now) >= self.capacity]:
                del self._buckets[full]


class FailureLimiter:
    """Token buckets for refused keys: one per (client address, key id), ``max_failures`` at once and
    refilled at ``max_failures`` per ``window`` seconds, and a larger one per address
    (``max_address_failures``, default five times as many) against scanning many key ids. An empty
    bucket means 429 for refused keys only: a valid key is never refused, so a stale tab behind a
    shared address (a NAT, a proxy) locks out nobody but itself. A malformed or absent key is id "-"."""

    def __init__(self, max_failures: int = 10, window: float = 60.0, clock: Any = time.monotonic,
                 max_address_failures: int | None = None) -> None:
        self.clock = clock
        self._keys = _Buckets(max_failures, window)
        self._addresses = _Buckets(max_address_failures or 5 * max_failures, window)
        self._lock = threading.Lock()

    def retry_after(self, client: str, key_id: str = "-") -> float:
        """Seconds until ``client`` may try key ``key_id`` again; 0 when it may now."""
        with self._lock:
            now = self.clock()
            return max(self._keys.wait((client, key_id), now), self._addresses.wait(client, now))

    def fail(self, client: str, key_id: str = "-") -> None:
        with self._lock:
            now = self.clock()
            self._keys.take((client, key_id), now)
            self._addresses.take(client, now)


def authenticate(request: Request) -> KeyRecord:
    """The request's key (``X-API-Key``), checked first: a valid one always passes. Without one: 401,
    or 429 while this address has refused too many of this key id (or of any); 503 while the key file
    is damaged."""
    limiter: FailureLimiter = request.app.state.limiter
    client = request.client.host if request.client else "unknown"
    presented = request.headers.get("x-api-key")
    key = _verify(request, presented) if presented else None
    if key is not None:
        return key
    key_id = apikeys.key_id_of(presented) or "-"  # the id part only: a secret never reaches a log
    wait = limiter.retry_after(client, key_id)
    if wait > 0:
        raise HTTPException(429, "too many refused API keys from this address; try again later",
                            headers={"Retry-After": str(int(wait) + 1)})
    limiter.fail(client, key_id)
    log.warning("refused %s from %s (key id %s) for %s %s", "a wrong, unknown or revoked API key"
                if presented else "a request without an API key", client, key_id, request.method, request.url.path)
    raise HTTPException(401, "a valid X-API-Key header is required")


def _verify(request: Request, presented: str) -> KeyRecord | None:
    """The key, or None; a damaged key file refuses everyone (503), logged once, not on every request."""
    state = request.app.state
    try:
        key = apikeys.verify(state.keys_path, presented)
    except apikeys.StoreDamaged as exc:
        if state.keys_damaged != str(exc):
            state.keys_damaged = str(exc)
            log.error("%s. Until then every API request is refused (503).", exc)
        raise HTTPException(503, "the server's API key file is damaged; its administrator has to repair it "
                                 "(the server's log says how)") from None
    if state.keys_damaged:
        state.keys_damaged = None
        log.warning("the API key file %s can be read again", state.keys_path)
    return key


Key = Annotated[KeyRecord, Depends(authenticate)]


def create_app(data_root: Path, keys_path: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES, *,
               max_failures: int = 10, failure_window: float = 60.0, allow_private_callbacks: bool = False,
               callback_hosts: str | tuple[str, ...] = (),
               callback_poll_seconds: float | None = None, callback_options: dict[str, Any] | None = None,
               max_address_failures: int | None = None, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
               max_concurrent_uploads: int = 2, max_bytes_per_day: int = DEFAULT_MAX_BYTES_PER_DAY,
               idle_timeout: float = 60.0, sweep_seconds: float | None = 600.0, docs: bool = False
               ) -> FastAPI:
    """The API on ``data_root``, with keys from ``keys_path`` (default ``<data_root>/api/keys.json``).

    ``callback_poll_seconds``: look for finished uploads to call back this often, in a thread of the
    server (None: the integrator calls :func:`konspekt.callbacks.notify_pending` elsewhere).
    ``allow_private_callbacks`` lets callback URLs point at private addresses (a LAN); ``callback_hosts``
    (``KONSPEKT_API_CALLBACK_HOSTS``), when set, are the only hosts they may name (:class:`callbacks.Policy`).
    An upload is refused (and nothing of it kept) past ``max_bytes`` of body (413), when the disk of
    ``input/`` would keep less than ``min_free_bytes`` (507), beyond ``max_concurrent_uploads`` of one
    key at once or ``max_bytes_per_day`` of one key in 24 hours (429), and when the client sends
    nothing for ``idle_timeout`` seconds (408). Half uploads whose writer is gone are swept every
    ``sweep_seconds`` once that old (None: at start only, after a day). ``docs``: serve /docs,
    /redoc and /openapi.json (they load scripts from a CDN, so off by default).
    """
    data_root = Path(data_root)
    keys_path = Path(keys_path) if keys_path else apikeys.default_store(data_root)
    limiter = FailureLimiter(max_failures, failure_window, max_address_failures=max_address_failures)
    limits = Limits(max_bytes, min_free_bytes, max_concurrent_uploads, max_bytes_per_day, idle_timeout)
    callback_policy = callbacks.Policy.of(allow_private_callbacks, callback_hosts)

    stop, started = threading.Event(), threading.Lock()

    def start_background() -> None:
        """Once per process: sweep what a killed server left half-written, start the callback poller.
        From the lifespan, from the host server's start (``app.state.start_background``: the Airflow
        plugin calls it), or else at the first request."""
        if not started.acquire(blocking=False):
            return
        try:
            uploads.sweep_temps(data_root, *([sweep_seconds] if sweep_seconds else []))
            if sweep_seconds:
                threading.Thread(target=_sweep_temps, args=(data_root, sweep_seconds, stop),
                                 name="konspekt-sweep", daemon=True).start()
            if callback_poll_seconds:
                options = {"policy": callback_policy, "keys_path": keys_path, **(callback_options or {})}
                threading.Thread(target=_poll_callbacks, args=(data_root, callback_poll_seconds, stop, options),
                                 name="konspekt-callbacks", daemon=True).start()
        except BaseException:
            started.release()  # not started: the next request tries again
            raise

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start_background()
        yield
        stop.set()

    app = FastAPI(title="konspekt", summary="Lecture videos in, PDF notes out", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.limiter, app.state.keys_path, app.state.keys_damaged = limiter, keys_path, None
    app.state.start_background, app.state.stop_background = start_background, stop.set

    @app.middleware("http")
    async def background_first(request: Request, call_next: Any) -> Any:
        if not started.locked():
            await run_in_threadpool(start_background)
        return await call_next(request)

    @app.middleware("http")
    async def callback_url_out_of_logs(request: Request, call_next: Any) -> Any:
        _lift_callback_url(request.scope)
        return await call_next(request)

    @app.middleware("http")
    async def safe_headers(request: Request, call_next: Any) -> Any:
        """No response is sniffed into another type (a JSON error read as HTML) or shown in a frame."""
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    def own_upload(upload_id: str, key: KeyRecord) -> uploads.Upload:
        """The upload if this key sent it; 404 otherwise, so ids of others' lectures reveal nothing."""
        upload = uploads.load(data_root, upload_id) if uploads.ID_RE.fullmatch(upload_id) else None
        if upload is None or upload.key_id != key.id:
            raise HTTPException(404, "no such lecture")
        return upload

    @app.post("/lectures", status_code=201)
    async def post_lecture(request: Request, key: Key,
                           filename: str | None = None) -> JSONResponse:
        header = request.headers.get("content-length")
        length = int(header) if header and header.isdigit() else None
        if length is not None and length > max_bytes:  # said so up front: not a byte is read
            raise HTTPException(413, f"the upload is over the limit of {max_bytes} bytes")
        callback_url = request.headers.get("x-callback-url") or request.scope.get(CALLBACK_SCOPE_KEY)
        if callback_url is not None:
            await _check_callback(callback_url, callback_policy)
        content_type = request.headers.get("content-type", "")
        try:
            slot = await run_in_threadpool(uploads.take_slot, data_root, key.id, limits.max_concurrent)
        except uploads.Busy as exc:
            raise _refusal(exc, key.id, limits) from None
        sent = _Body(request, limits)
        try:
            sent.day_left = await run_in_threadpool(_day_left, data_root, key.id, limits, length)
            await run_in_threadpool(_check_space, data_root, limits, length)
            if content_type.startswith("multipart/form-data"):
                upload = await _receive_multipart(sent, data_root, key.id, callback_url, callback_policy)
            else:
                name = filename or _header_name(request.headers.get("x-filename"))
                if not name:
                    raise HTTPException(400, "name the file: an X-Filename header or ?filename=")
                upload = await _receive_raw(sent, data_root, name, key.id, callback_url)
        except (uploads.TooLarge, uploads.NoSpace, OverQuota, IdleTimeout) as exc:
            raise _refusal(exc, key.id, limits) from None
        except ClientDisconnect:
            log.info("an upload from %s was cut off; nothing of it was kept", key.id)
            return JSONResponse({"detail": "the upload was cut off"}, status_code=400)
        finally:
            slot.release()
            if sent.received:  # kept or not: see uploads.count_bytes
                await run_in_threadpool(uploads.count_bytes, data_root, key.id, sent.received)
        log.info("key %s uploaded %s (%d bytes) as input/%s", key.id, upload.id, upload.size, upload.input_name)
        url = lecture_url(request, upload.id)
        body = {**upload.public(), "state": "waiting", "url": url}
        return JSONResponse(body, status_code=201, headers={"Location": url})

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        """The upload page (plain HTML and JS, no build step); it calls the API beside it with the user's key."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Content-Security-Policy": PAGE_CSP})

    for asset, media_type in PAGE_ASSETS.items():  # the page's script and style: files, so its CSP needs no inline
        app.get(f"/{asset}", include_in_schema=False)(_page_asset(WEB / asset, media_type))

    @app.get("/lectures")
    def list_lectures(request: Request, response: Response, key: Key,
                      limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
                      cursor: str | None = None) -> list[dict[str, Any]]:
        """This key's lectures, newest first, each with its state (as ``GET /lectures/{id}``), ``limit`` at
        a time; the next page's URL is in the ``Link`` header (``rel="next"``), none after the last."""
        try:
            page, after = uploads.list_page(data_root, key.id, limit, cursor)
        except ValueError as exc:
            raise HTTPException(400, "cursor is not one of this key's lectures; take it from a Link header") from exc
        if after is not None:
            next_url = f"{request.scope.get('root_path', '').rstrip('/')}/lectures?limit={limit}&cursor={after}"
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return [{"id": u.id, "name": u.original_name, "created": u.created, "url": lecture_url(request, u.id),
                 "status": status} for u, status in zip(page, uploads.states(data_root, page))]

    @app.get("/lectures/{upload_id}")
    def get_lecture(upload_id: str, key: Key) -> dict[str, Any]:
        upload = own_upload(upload_id, key)
        return uploads.state(data_root, upload.id)

    @app.get("/lectures/{upload_id}/{name}")
    def get_file(upload_id: str, name: str, key: Key) -> FileResponse:
        upload = own_upload(upload_id, key)
        if name not in uploads.ALLOWED_FILES:
            raise HTTPException(404, f"no such file; there are {', '.join(sorted(uploads.ALLOWED_FILES))}")
        path = uploads.output_file(data_root, upload.id, name)
        if path is None:
            raise HTTPException(404, f"{name} is not there (yet): see /lectures/{upload.id}")
        return FileResponse(path, filename=name)

    return app


def _page_asset(path: Path, media_type: str) -> Any:
    def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})
    return asset


def lecture_url(request: Request, upload_id: str) -> str:
    """The lecture's path as a client reaches it: under the prefix the app is mounted at (/konspekt in
    Airflow's api-server), which Starlette passes as the root path."""
    return f"{request.scope.get('root_path', '').rstrip('/')}/lectures/{upload_id}"


def _header_name(value: str | None) -> str | None:
    """X-Filename as text: percent-encoded UTF-8 (``lecture%20%D0%9B.mp4``), or raw UTF-8 bytes,
    which HTTP servers hand over as Latin-1."""
    if not value:
        return None
    try:
        value = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return unquote(value, errors="replace")


def _lift_callback_url(scope: MutableMapping[str, Any]) -> None:
    """Move ``?callback_url=`` out of the query string into the scope, before any response starts: the
    access logs (uvicorn's, Airflow's) print the query string, and a callback URL may carry the receiver's
    token. They read this same scope, so they see the query without it."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    urls = [value for name, value in pairs if name == "callback_url"]
    if urls:
        scope[CALLBACK_SCOPE_KEY] = urls[-1]  # the last, as a query parameter would be
        scope["query_string"] = urlencode([(n, v) for n, v in pairs if n != "callback_url"]).encode("latin-1")


async def _check_callback(url: str, policy: callbacks.Policy) -> None:
    try:
        await run_in_threadpool(callbacks.check_url, url, policy)  # it may resolve a host name
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


class _Writer:
    """Gathers the body's small network chunks into writes of :data:`uploads.CHUNK` (in a thread:
    disk writes never block the event loop)."""

    def __init__(self, incoming: uploads.Incoming) -> None:
        self.incoming, self.buffer = incoming, bytearray()

    async def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= uploads.CHUNK:
            await self.flush()

    async def flush(self) -> None:
        if self.buffer:
            await run_in_threadpool(self.incoming.write, bytes(self.buffer))
            self.buffer.clear()

    async def commit(self, callback_url: str | None) -> uploads.Upload:
        await self.flush()
        return await run_in_threadpool(self.incoming.commit, callback_url)


def _refusal(exc: Exception, key_id: str, limits: Limits) -> HTTPException:
    """The answer to an upload refused before or while it was received (nothing of it was kept)."""
    if isinstance(exc, uploads.TooLarge):
        return HTTPException(413, f"the upload is over the limit of {limits.max_bytes} bytes")
    if isinstance(exc, uploads.NoSpace):
        log.warning("refused an upload of key %s: %s", key_id, exc)
        return HTTPException(507, "the server is short of disk space; try again later", headers={"Retry-After": "600"})
    if isinstance(exc, uploads.Busy):
        return HTTPException(429, f"this key has {limits.max_concurrent} uploads in flight; send the next when one "
                                  "is done", headers={"Retry-After": "30"})
    if isinstance(exc, OverQuota):
        return HTTPException(429, f"this key sent its {limits.max_bytes_per_day} bytes for 24 hours; try again later",
                             headers={"Retry-After": "3600"})
    if isinstance(exc, IdleTimeout):
        log.info("dropped an upload of key %s: nothing came for %g s", key_id, limits.idle_timeout)
        return HTTPException(408, f"nothing arrived for {limits.idle_timeout:g} s; the upload was dropped",
                             headers={"Connection": "close"})
    raise TypeError(f"not a refusal: {exc!r}")


def _day_left(data_root: Path, key_id: str, limits: Limits, length: int | None) -> int | None:
    """Bytes the key may still send in this 24 hours (None: no limit); :class:`OverQuota` when the
    announced length is more, or nothing is left."""
    if limits.max_bytes_per_day <= 0:
        return None
    left = limits.max_bytes_per_day - uploads.bytes_today(data_root, key_id)
    if left <= 0 or (length is not None and length > left):
        raise OverQuota()
    return left


def _check_space(data_root: Path, limits: Limits, length: int | None) -> None:
    """Before a byte is read: 507 if the announced length would leave the disk short (and while
    writing, :class:`uploads.Incoming` checks again)."""
    folder = data_root / "input"
    folder.mkdir(parents=True, exist_ok=True)
    uploads.check_space(folder, limits.min_free_bytes, length or 0)


class _Body:
    """The request body as it comes: at most ``max_bytes`` and the key's bytes left today, with at most
    ``idle_timeout`` seconds between chunks. ``received`` counts every byte, kept or not."""

    def __init__(self, request: Request, limits: Limits) -> None:
        self.request, self.limits = request, limits
        self.received = 0
        self.day_left: int | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        stream = self.request.stream()
        while True:
            try:  # a client that stops sending would hold its slot, its temp file and a connection for ever
                chunk = await asyncio.wait_for(anext(stream), self.limits.idle_timeout or None)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise IdleTimeout() from None
            self.received += len(chunk)
            if self.received > self.limits.max_bytes:  # every byte of the body: a form's fields too
                raise uploads.TooLarge(f"over the limit of {self.limits.max_bytes} bytes")
            if self.day_left is not None and self.received > self.day_left:
                raise OverQuota()
            yield chunk

    async def incoming(self, data_root: Path, name: str, key_id: str) -> uploads.Incoming:
        return await run_in_threadpool(uploads.Incoming, data_root, name, key_id, self.limits.max_bytes,
                                       min_free_bytes=self.limits.min_free_bytes)


async def _receive_raw(body: _Body, data_root: Path, name: str, key_id: str,
                       callback_url: str | None) -> uploads.Upload:
    incoming = await body.incoming(data_root, name, key_id)
    try:
        writer = _Writer(incoming)
        async for chunk in body.chunks():
            await writer.write(chunk)
        return await writer.commit(callback_url)
    finally:
        await run_in_threadpool(incoming.abort)  # after a commit: nothing left to remove


@contextlib.contextmanager
def _readable() -> Iterator[None]:
    """python-multipart's own errors (a bad boundary, garbage, a broken part header) as a 400, not a 500."""
    try:
        yield
    except FormParserError as exc:
        raise HTTPException(400, f"the body is not multipart/form-data as its Content-Type says ({exc})") from None


class _Multipart:
    """python-multipart's streaming parser, turned into events: ("begin", filename), ("data", bytes),
    ("end", None) for the one file part; small fields are kept in ``fields``. At most
    :data:`MAX_FORM_PARTS` parts and :data:`MAX_FORM_BYTES` of part headers and fields (400): only the
    file's bytes may be many, and they go to disk."""

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[str, Any]] = []
        self.fields: dict[str, str] = {}
        self._header, self._value, self._disposition = b"", b"", b""
        self._field: str | None = None  # the form field being read; None in a file part
        self._data = bytearray()
        self.parts = 0
        self.file_bytes = 0  # the file part's bytes so far
        self._form_bytes = 0  # part headers and field values so far
        with _readable():
            self.parser = python_multipart.MultipartParser(boundary, {
                "on_part_begin": self._begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
                "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end, "on_headers_finished": self._headers_finished})

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        self.events = []
        with _readable():
            self.parser.write(chunk)
        return self.events

    def finish(self) -> None:
        with _readable():
            self.parser.finalize()

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_FORM_PARTS:
            raise HTTPException(400, f"too many parts in the form: send the file and at most "
                                     f"{MAX_FORM_PARTS - 1} fields")
        self._disposition, self._field, self._data = b"", None, bytearray()

    def _count(self, size: int) -> None:
        self._form_bytes += size
        if self._form_bytes > MAX_FORM_BYTES:
            raise HTTPException(400, f"the form's fields and part headers are over {MAX_FORM_BYTES} bytes")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"filename" in options:
            self.events.append(("begin", options[b"filename"].decode("utf-8", "replace")))
        else:
            self._field = options.get(b"name", b"").decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is None:
            self.file_bytes += end - start
            self.events.append(("data", data[start:end]))
        elif len(self._data) + end - start > MAX_FIELD_BYTES:
            raise HTTPException(400, f"form field {self._field!r} is too long")
        else:
            self._count(end - start)
            self._data += data[start:end]

    def _part_end(self) -> None:
        if self._field is None:
            self.events.append(("end", None))
        else:
            self.fields[self._field] = self._data.decode("utf-8", "replace")


async def _receive_multipart(body: _Body, data_root: Path, key_id: str, callback_url: str | None,
                             policy: callbacks.Policy) -> uploads.Upload:
    if python_multipart is None:  # pragma: no cover
        raise HTTPException(415, "multipart needs python-multipart on the server; send the raw body with X-Filename")
    _, params = parse_options_header(body.request.headers["content-type"])
    if not params.get(b"boundary"):
        raise HTTPException(400, "multipart/form-data without a boundary")
    incoming: uploads.Incoming | None = None
    writer: _Writer | None = None
    complete = False
    form = _Multipart(params[b"boundary"])
    try:
        async for chunk in body.chunks():
            for kind, value in form.feed(chunk):
                if kind == "begin":
                    if incoming is not None:
                        raise HTTPException(400, "send one file per request")
                    incoming = await body.incoming(data_root, value, key_id)
                    writer = _Writer(incoming)
                elif kind == "data" and writer is not None:
                    await writer.write(value)
                elif kind == "end":
                    complete = True
            if body.received - form.file_bytes > MAX_FORM_BYTES:  # boundaries, preamble, epilogue too
                raise HTTPException(400, f"the form around the file is over {MAX_FORM_BYTES} bytes")
        form.finish()
        if writer is None or not complete:
            raise HTTPException(400, "no complete file part in the form")
        callback_url = callback_url or form.fields.get("callback_url") or None
        if callback_url is not None:
            await _check_callback(callback_url, policy)
        return await writer.commit(callback_url)
    finally:
        if incoming is not None:
            await run_in_threadpool(incoming.abort)


def _sweep_temps(data_root: Path, seconds: float, stop: threading.Event) -> None:
    """Every ``seconds``: remove half uploads that old whose writer is gone (a client dropped, a worker killed)."""
    while not stop.wait(seconds):
        try:
            for path in uploads.sweep_temps(data_root, seconds):
                log.info("removed %s, a half upload nobody writes any more", path.name)
        except Exception:  # a shared folder gone for a moment must not end the sweeps for good
            log.exception("sweeping half uploads failed; trying again in %s s", seconds)


def _poll_callbacks(data_root: Path, seconds: float, stop: threading.Event, options: dict[str, Any]) -> None:
    """Every ``seconds``, hand finished uploads to a few threads (:class:`callbacks.Pool`): a slow or
    dead receiver holds one of them, never the round, nor other keys' callbacks."""
    pool = callbacks.Pool()
    try:
        while not stop.wait(seconds):
            try:
                callbacks.notify_pending(data_root, pool=pool, **options)
            except Exception:  # a shared folder gone for a moment must not end the poller for good
                log.exception("calling back finished uploads failed; trying again in %s s", seconds)
    finally:
        pool.close(wait=False)
