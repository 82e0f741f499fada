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
revoked key is 401; another key's lecture is 404, as if it did not exist. A client address with too
many refused keys gets 429 with Retry-After until its bucket refills. The body is streamed to disk
(:mod:`konspekt.uploads`), never held in memory; past ``max_bytes`` the answer is 413 and nothing stays.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, MutableMapping
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
    from python_multipart.multipart import parse_options_header
except ImportError:  # pragma: no cover - then only the raw body is taken
    python_multipart = None  # type: ignore[assignment]

CALLBACK_SCOPE_KEY = "konspekt.callback_url"  # where ?callback_url= goes once out of the query string

DEFAULT_MAX_BYTES = 20 * 10**9  # as KONSPEKT_MAX_FILE_GB's default: a claim would quarantine a larger file
MAX_FIELD_BYTES = 4096  # a form field (callback_url) is small; a file part is the only large one
DEFAULT_PAGE, MAX_PAGE = 50, 200  # lectures per GET /lectures: each costs a few small reads

PAGE = Path(__file__).parent / "web" / "index.html"
log = logging.getLogger("konspekt.webapi")


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureLimiter:
    """A token bucket per client address for refused keys: ``max_failures`` at once, refilled at
    ``max_failures`` per ``window`` seconds. An empty bucket means 429 without looking at the key."""

    def __init__(self, max_failures: int = 10, window: float = 60.0, clock: Any = time.monotonic) -> None:
        self.capacity, self.rate, self.clock = float(max_failures), max_failures / window, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, client: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.setdefault(client, _Bucket(self.capacity, now))
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try a key again; 0 when it may now."""
        with self._lock:
            bucket = self._bucket(client)
            return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def fail(self, client: str) -> None:
        with self._lock:
            self._bucket(client).tokens -= 1
            if len(self._buckets) > 10_000:  # forget clients whose buckets are full again
                for name in [c for c, b in self._buckets.items() if b.tokens + (self.clock() - b.at) * self.rate
                             >= self.capacity]:
                    del self._buckets[name]


def authenticate(request: Request) -> KeyRecord:
    """The request's key (``X-API-Key``); 401 without a valid one, 429 while its address is blocked."""
    limiter: FailureLimiter = request.app.state.limiter
    client = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait > 0:
        raise HTTPException(429, "too many refused API keys from this address; try again later",
                            headers={"Retry-After": str(int(wait) + 1)})
    presented = request.headers.get("x-api-key")
    key = apikeys.verify(request.app.state.keys_path, presented) if presented else None
    if key is None:
        limiter.fail(client)
        # the id part only: a secret never reaches a log
        log.warning("refused %s from %s (key id %s) for %s %s", "a wrong, unknown or revoked API key"
                    if presented else "a request without an API key", client,
                    apikeys.key_id_of(presented) or "-", request.method, request.url.path)
        raise HTTPException(401, "a valid X-API-Key header is required")
    return key


Key = Annotated[KeyRecord, Depends(authenticate)]


def create_app(data_root: Path, keys_path: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES, *,
               max_failures: int = 10, failure_window: float = 60.0, allow_private_callbacks: bool = False,
               callback_hosts: str | tuple[str, ...] = (),
               callback_poll_seconds: float | None = None, callback_options: dict[str, Any] | None = None
               ) -> FastAPI:
    """The API on ``data_root``, with keys from ``keys_path`` (default ``<data_root>/api/keys.json``).

    ``callback_poll_seconds``: look for finished uploads to call back this often, in a thread of the
    server (None: the integrator calls :func:`konspekt.callbacks.notify_pending` elsewhere).
    ``allow_private_callbacks`` lets callback URLs point at private addresses (a LAN); ``callback_hosts``
    (``KONSPEKT_API_CALLBACK_HOSTS``), when set, are the only hosts they may name (:class:`callbacks.Policy`).
    """
    data_root = Path(data_root)
    keys_path = Path(keys_path) if keys_path else apikeys.default_store(data_root)
    limiter = FailureLimiter(max_failures, failure_window)
    callback_policy = callbacks.Policy.of(allow_private_callbacks, callback_hosts)

    stop, started = threading.Event(), threading.Lock()

    def start_background() -> None:
        """Once per process: sweep what a killed server left half-written, start the callback poller.
        From the lifespan, from the host server's start (``app.state.start_background``: the Airflow
        plugin calls it), or else at the first request."""
        if not started.acquire(blocking=False):
            return
        try:
            uploads.sweep_temps(data_root)
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

    app = FastAPI(title="konspekt", summary="Lecture videos in, PDF notes out", lifespan=lifespan)
    app.state.limiter, app.state.keys_path = limiter, keys_path
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

    def own_upload(upload_id: str, key: KeyRecord) -> uploads.Upload:
        """The upload if this key sent it; 404 otherwise, so ids of others' lectures reveal nothing."""
        upload = uploads.load(data_root, upload_id) if uploads.ID_RE.fullmatch(upload_id) else None
        if upload is None or upload.key_id != key.id:
            raise HTTPException(404, "no such lecture")
        return upload

    @app.post("/lectures", status_code=201)
    async def post_lecture(request: Request, key: Key,
                           filename: str | None = None) -> JSONResponse:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:  # said so up front: not a byte is read
            raise HTTPException(413, f"the upload is over the limit of {max_bytes} bytes")
        callback_url = request.headers.get("x-callback-url") or request.scope.get(CALLBACK_SCOPE_KEY)
        if callback_url is not None:
            await _check_callback(callback_url, callback_policy)
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith("multipart/form-data"):
                upload = await _receive_multipart(request, data_root, key.id, max_bytes, callback_url,
                                                  callback_policy)
            else:
                name = filename or _header_name(request.headers.get("x-filename"))
                if not name:
                    raise HTTPException(400, "name the file: an X-Filename header or ?filename=")
                upload = await _receive_raw(request, data_root, name, key.id, max_bytes, callback_url)
        except uploads.TooLarge as exc:
            raise HTTPException(413, f"the upload is over the limit of {max_bytes} bytes") from exc
        except ClientDisconnect:
            log.info("an upload from %s was cut off; nothing of it was kept", key.id)
            return JSONResponse({"detail": "the upload was cut off"}, status_code=400)
        log.info("key %s uploaded %s (%d bytes) as input/%s", key.id, upload.id, upload.size, upload.input_name)
        url = lecture_url(request, upload.id)
        body = {**upload.public(), "state": "waiting", "url": url}
        return JSONResponse(body, status_code=201, headers={"Location": url})

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        """The upload page (plain HTML and JS, no build step); it calls the API beside it with the user's key."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

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


async def _receive_raw(request: Request, data_root: Path, name: str, key_id: str, max_bytes: int,
                       callback_url: str | None) -> uploads.Upload:
    incoming = await run_in_threadpool(uploads.Incoming, data_root, name, key_id, max_bytes)
    try:
        writer = _Writer(incoming)
        async for chunk in request.stream():
            await writer.write(chunk)
        return await writer.commit(callback_url)
    finally:
        await run_in_threadpool(incoming.abort)  # after a commit: nothing left to remove


class _Multipart:
    """python-multipart's streaming parser, turned into events: ("begin", filename), ("data", bytes),
    ("end", None) for the one file part; small fields are kept in ``fields``."""

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[str, Any]] = []
        self.fields: dict[str, str] = {}
        self._header, self._value, self._disposition = b"", b"", b""
        self._field: str | None = None  # the form field being read; None in a file part
        self._data = bytearray()
        self.parser = python_multipart.MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished})

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        self.events = []
        self.parser.write(chunk)
        return self.events

    def _begin(self) -> None:
        self._disposition, self._field, self._data = b"", None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
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
            self.events.append(("data", data[start:end]))
        elif len(self._data) + end - start > MAX_FIELD_BYTES:
            raise HTTPException(400, f"form field {self._field!r} is too long")
        else:
            self._data += data[start:end]

    def _part_end(self) -> None:
        if self._field is None:
            self.events.append(("end", None))
        else:
            self.fields[self._field] = self._data.decode("utf-8", "replace")


async def _receive_multipart(request: Request, data_root: Path, key_id: str, max_bytes: int,
                             callback_url: str | None, policy: callbacks.Policy) -> uploads.Upload:
    if python_multipart is None:  # pragma: no cover
        raise HTTPException(415, "multipart needs python-multipart on the server; send the raw body with X-Filename")
    _, params = parse_options_header(request.headers["content-type"])
    if not params.get(b"boundary"):
        raise HTTPException(400, "multipart/form-data without a boundary")
    form = _Multipart(params[b"boundary"])
    incoming: uploads.Incoming | None = None
    writer: _Writer | None = None
    complete = False
    try:
        async for chunk in request.stream():
            for kind, value in form.feed(chunk):
                if kind == "begin":
                    if incoming is not None:
                        raise HTTPException(400, "send one file per request")
                    incoming = await run_in_threadpool(uploads.Incoming, data_root, value, key_id, max_bytes)
                    writer = _Writer(incoming)
                elif kind == "data" and writer is not None:
                    await writer.write(value)
                elif kind == "end":
                    complete = True
        form.parser.finalize()
        if writer is None or not complete:
            raise HTTPException(400, "no complete file part in the form")
        callback_url = callback_url or form.fields.get("callback_url") or None
        if callback_url is not None:
            await _check_callback(callback_url, policy)
        return await writer.commit(callback_url)
    finally:
        if incoming is not None:
            await run_in_threadpool(incoming.abort)


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
