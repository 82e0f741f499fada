"""API keys: stored hashed, checked in constant time, revocable, none by default."""

from __future__ import annotations

import json
import stat

import pytest

from konspekt import apikeys, cli


def test_a_key_is_stored_hashed_in_a_private_file(tmp_path):
    store = tmp_path / "api" / "keys.json"
    key_id, token = apikeys.create(store, "Алиса")
    assert token.startswith(f"kp_{key_id}_") and len(token) == len("kp_") + 16 + 1 + 43
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    text = store.read_text()
    secret = token.split("_", 2)[2]
    assert secret not in text and token not in text
    [entry] = json.loads(text)["keys"]
    assert entry["hash"] == apikeys.hash_secret(secret) and entry["owner"] == "Алиса"
    assert not list(store.parent.glob(".*.tmp"))  # written atomically, no temp left


def test_verify_takes_only_the_exact_active_key(tmp_path):
    store = tmp_path / "keys.json"
    key_id, token = apikeys.create(store, "alice")
    other_id, other = apikeys.create(store, "bob")
    assert apikeys.verify(store, token).id == key_id
    assert apikeys.verify(store, other).owner == "bob"
    wrong_secret = f"kp_{key_id}_{other.split('_', 2)[2]}"  # a real secret, but another key's
    unknown_id = f"kp_{'0' * 16}_{token.split('_', 2)[2]}"
    for bad in (None, "", "kp_", token + "x", token[:-1], wrong_secret, unknown_id, token.upper(), " " + token):
        assert apikeys.verify(store, bad) is None, bad
    assert apikeys.revoke(store, key_id) is True
    assert apikeys.verify(store, token) is None  # revoked: refused at once
    assert apikeys.verify(store, other).id == other_id  # the others still work
    assert apikeys.revoke(store, key_id) is False  # revoked already
    assert [(k.id, k.active) for k in apikeys.list_keys(store)] == [(key_id, False), (other_id, True)]


def test_there_is_no_default_key(tmp_path):
    store = tmp_path / "keys.json"
    assert apikeys.list_keys(store) == []
    for guess in ("kp_0000000000000000_" + "A" * 43, "admin", "konspekt"):
        assert apikeys.verify(store, guess) is None
    assert not store.exists()  # verifying never creates a store (nor a key)


def test_key_id_for_logs_never_holds_the_secret(tmp_path):
    key_id, token = apikeys.create(tmp_path / "keys.json", "alice")
    assert apikeys.key_id_of(token) == key_id
    assert apikeys.key_id_of("not a key") is None


def test_the_cli_creates_lists_and_revokes(tmp_path, capsys):
    store = str(tmp_path / "keys.json")
    assert cli.main(["keys", "--store", store, "create", "--owner", "lab 3"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    key_id = apikeys.key_id_of(token)
    assert key_id and "shown only now" in out.err
    assert apikeys.verify(tmp_path / "keys.json", token) is not None
    assert cli.main(["keys", "--store", store, "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "lab 3" in listed and "active" in listed
    assert token.split("_", 2)[2] not in listed  # the secret is printed once, on create
    assert cli.main(["keys", "--store", store, "revoke", key_id]) == 0
    assert cli.main(["keys", "--store", store, "revoke", key_id]) == 1
    capsys.readouterr()
    assert cli.main(["keys", "--store", store, "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert "keys" in cli.commands()


def test_a_damaged_store_is_never_read_as_no_keys_nor_written_over(tmp_path, capsys):
    store = tmp_path / "keys.json"
    _, token = apikeys.create(store, "alice")
    whole = store.read_text()
    store.write_text(whole[:len(whole) // 2])  # a full disk, a copy cut short
    for call in (lambda: apikeys.verify(store, token), lambda: apikeys.list_keys(store),
                 lambda: apikeys.create(store, "bob"), lambda: apikeys.revoke(store, "0" * 16)):
        with pytest.raises(apikeys.StoreDamaged, match="konspekt keys create"):
            call()
    assert store.read_text() == whole[:len(whole) // 2]  # nothing wrote over it
    for args in (["list"], ["create", "--owner", "bob"]):
        assert cli.main(["keys", "--store", str(store), *args]) == 1
        err = capsys.readouterr().err
        assert f"{store} is damaged" in err and "restore it from a backup" in err and "Traceback" not in err
