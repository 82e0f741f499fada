"""API keys for the HTTP upload API: created and revoked by ``konspekt keys``, checked on every request.

A key is ``kp_<id>_<secret>``: the id (16 hex digits) finds the key's entry, then the secret is
compared in constant time against the stored hash. The store is one JSON file
(``<data_root>/api/keys.json`` by default), mode 0600, replaced atomically; it holds no key's secret.
It does hold each key's callback secret as it is (callbacks are signed with it, so a hash would not
do): made at ``create``, replaced by ``konspekt keys callback-secret ID``.
There is no default key: an empty or missing store lets nobody in, nor does a damaged one
(:class:`StoreDamaged`: a truncated file is never read as no keys or written over).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from konspekt.layout import atomic_path

PREFIX = "kp"
CALLBACK_SECRET_PREFIX = "kpcb_"
KEY_RE = re.compile(r"kp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")  # token_hex(8), token_urlsafe(32)
OWNER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")  # any printable text: a person, a team, a script
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    owner: str
    hash: str  # sha256 of the secret, hex
    created: str
    revoked: str | None = None
    # signs the key's callbacks (konspekt.callbacks); None in a store from before callbacks were signed
    callback_secret: str | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.revoked is None

    def public(self) -> dict[str, str | None]:
        """What may be shown or logged: everything but the hash."""
        return {"id": self.id, "owner": self.owner, "created": self.created, "revoked": self.revoked}


def default_store(data_root: Path) -> Path:
    return Path(data_root) / "api" / "keys.json"


def hash_secret(secret: str) -> str:
    # Plain sha256 is enough here: the secret is 32 random bytes (256 bits), so there is nothing to
    # guess or look up in a table, and a slow KDF (scrypt) would only cost time on every request.
    # A leaked keys.json still gives no usable key: sha256 is one-way.
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create(store: Path, owner: str) -> tuple[str, str]:
    """A new key for ``owner``: returns ``(key_id, token)``, where ``token`` (``kp_<id>_<secret>``) is
    the ``X-API-Key`` value. The token is shown this once: only its hash is stored."""
    owner = owner.strip()
    if not OWNER_RE.fullmatch(owner):
        raise ValueError("the owner must be 1 to 200 printable characters")
    secret = secrets.token_urlsafe(32)
    with _locked(store):
        keys = _load(store)
        key_id = secrets.token_hex(8)
        while any(k.id == key_id for k in keys):  # 2^64 ids: a clash is all but impossible, but cheap to rule out
            key_id = secrets.token_hex(8)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        keys.append(KeyRecord(key_id, owner, hash_secret(secret), now, callback_secret=new_callback_secret()))
        _save(store, keys)
    return key_id, f"{PREFIX}_{key_id}_{secret}"


def new_callback_secret() -> str:
    return f"{CALLBACK_SECRET_PREFIX}{secrets.token_urlsafe(32)}"


def callback_secret(store: Path, key_id: str) -> str | None:
    """The secret that signs ``key_id``'s callbacks; None: no such key, or one made before there were any."""
    return next((k.callback_secret for k in _load(store) if k.id == key_id), None)


def set_callback_secret(store: Path, key_id: str) -> str | None:
    """A new callback secret for an active key (the old one stops signing at once); None: no such active key."""
    secret = new_callback_secret()
    with _locked(store):
        keys = _load(store)
        found = [i for i, k in enumerate(keys) if k.id == key_id and k.active]
        for i in found:
            keys[i] = replace(keys[i], callback_secret=secret)
        if found:
            _save(store, keys)
    return secret if found else None


def list_keys(store: Path) -> list[KeyRecord]:
    return _load(store)


def revoke(store: Path, key_id: str) -> bool:
    """Revoke a key at once (the server reads the store on every request). False: no such active key."""
    with _locked(store):
        keys = _load(store)
        found = False
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for i, key in enumerate(keys):
            if key.id == key_id and key.active:
                keys[i] = replace(key, revoked=now)
                found = True
        if found:
            _save(store, keys)
    return found


def key_id_of(header_value: str | None) -> str | None:
    """The id part of a presented key, for logs (never the secret); None when it is not a key at all."""
    match = KEY_RE.fullmatch(header_value or "")
    return match.group(1) if match else None


def verify(store: Path, header_value: str | None) -> KeyRecord | None:
    """The active key ``header_value`` is, or None (missing, malformed, unknown, revoked, wrong secret)."""
    match = KEY_RE.fullmatch(header_value or "")
    if not match:
        return None
    key_id, secret = match.groups()
    record = next((k for k in _load(store) if k.id == key_id), None)
    # Compare even for an unknown id, so the answer takes as long whether the id exists or not.
    ok = hmac.compare_digest(hash_secret(secret), record.hash if record else _DUMMY_HASH)
    return record if ok and record is not None and record.active else None


class StoreDamaged(Exception):
    """The key file is there but cannot be read (truncated, not JSON, not ours): nobody gets in, and
    nothing writes over it, until someone repairs it."""


def _load(store: Path) -> list[KeyRecord]:
    try:
        data = json.loads(Path(store).read_text(encoding="utf-8"))
        keys = [KeyRecord(**{f: k.get(f) for f in ("id", "owner", "hash", "created", "revoked", "callback_secret")})
                for k in data.get("keys", [])]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # ValueError: not JSON, not UTF-8
        raise StoreDamaged(_damaged(store, f"{type(exc).__name__}: {exc}")) from exc
    for key in keys:
        if not all(isinstance(v, str) for v in (key.id, key.owner, key.hash, key.created)):
            raise StoreDamaged(_damaged(store, f"the entry of key {key.id!r} lacks a field"))
    return keys


def _damaged(store: Path, why: str) -> str:
    return (f"the API key file {store} is damaged ({why}); restore it from a backup, or move it aside "
            "and create new keys with `konspekt keys create --owner NAME` (the old keys then stop working)")


def _save(store: Path, keys: list[KeyRecord]) -> None:
    store = Path(store)
    store.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_path(store) as tmp:
        os.chmod(tmp, 0o600)  # atomic_path makes files for the user's tools (0666 & ~umask); this one is the server's
        tmp.write_text(json.dumps({"version": 1, "keys": [asdict(k) for k in keys]}, indent=2) + "\n",
                       encoding="utf-8")


@contextlib.contextmanager
def _locked(store: Path) -> Iterator[None]:
    """One writer at a time (the CLI and a server may both write): an flock on the store's folder."""
    folder = Path(store).parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
