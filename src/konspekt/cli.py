"""``konspekt <command> [args]``: one entry point for every stage and tool.

    konspekt transcribe --video-dir DIR --model small     # same as python -m konspekt.stages.transcribe
    konspekt sample lecture.mp4                           # a spoken sample lecture
    konspekt keys create --owner NAME | list | revoke ID  # API keys of the upload API
    konspekt keys callback-secret ID                      # a new secret that signs the key's callbacks
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path

import konspekt.stages

TOOLS = {"sample": "konspekt.sample", "doctor": "konspekt.doctor", "warm-cache": "konspekt.warm_cache"}


def commands() -> dict[str, str]:
    stages = {m.name.replace("_", "-"): f"konspekt.stages.{m.name}"
              for m in pkgutil.iter_modules(konspekt.stages.__path__) if not m.name.startswith("_")}
    tools = {name: module for name, module in TOOLS.items() if importlib.util.find_spec(module)}
    return {**stages, **tools, "keys": "konspekt.cli"}


def keys(argv: list[str]) -> int:
    """``konspekt keys``: create, list and revoke the upload API's keys, and set their callback secrets."""
    from konspekt import apikeys

    parser = argparse.ArgumentParser(prog="konspekt keys", description=keys.__doc__)
    parser.add_argument("--store", type=Path, default=None,
                        help="the key file (default: $KONSPEKT_API_KEYS_FILE, else <data root>/api/keys.json, "
                             "the data root being $KONSPEKT_DATA_ROOT or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", help="a new key; its secret is printed once").add_argument("--owner", required=True)
    sub.add_parser("list", help="every key, without secrets")
    sub.add_parser("revoke", help="revoke a key at once").add_argument("id")
    sub.add_parser("callback-secret", help="a new secret that signs the key's callbacks (X-Konspekt-Signature); "
                   "the old one stops at once").add_argument("id")
    args = parser.parse_args(argv)
    store = args.store or Path(os.environ.get("KONSPEKT_API_KEYS_FILE") or
                               apikeys.default_store(Path(os.environ.get("KONSPEKT_DATA_ROOT", "data"))))
    if args.command == "create":
        try:
            key_id, token = apikeys.create(store, args.owner)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"created key {key_id} for {args.owner} in {store}", file=sys.stderr)
        # stderr: stdout is the key alone, for scripts
        print(f"its callbacks are signed with {apikeys.callback_secret(store, key_id)} (X-Konspekt-Signature; "
              f"`konspekt keys callback-secret {key_id}` replaces it)", file=sys.stderr)
        print("the key (shown only now; send it as the X-API-Key header):", file=sys.stderr)
        print(token)
    elif args.command == "list":
        for key in apikeys.list_keys(store):
            state = f"revoked {key.revoked}" if key.revoked else "active"
            unsigned = "" if key.callback_secret else "\tcallbacks unsigned (no callback secret yet)"
            print(f"{key.id}\t{key.owner}\tcreated {key.created}\t{state}{unsigned}")
    elif args.command == "callback-secret":
        secret = apikeys.set_callback_secret(store, args.id)
        if secret is None:
            print(f"no active key {args.id} in {store}", file=sys.stderr)
            return 1
        print(f"key {args.id} now signs its callbacks with (the old secret no longer does):", file=sys.stderr)
        print(secret)
    elif not apikeys.revoke(store, args.id):
        print(f"no active key {args.id} in {store}", file=sys.stderr)
        return 1
    else:
        print(f"revoked key {args.id}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known = commands()
    if not argv or argv[0] in {"-h", "--help"} or argv[0].replace("_", "-") not in known:
        print(__doc__.strip() + "\n\ncommands: " + ", ".join(sorted(known)), file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    if argv[0] == "keys":
        from konspekt.apikeys import StoreDamaged

        try:
            return keys(argv[1:])
        except StoreDamaged as exc:  # what is wrong and how to repair it, not a traceback
            print(f"konspekt keys: {exc}", file=sys.stderr)
            return 1
    module = importlib.import_module(known[argv[0].replace("_", "-")])
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
