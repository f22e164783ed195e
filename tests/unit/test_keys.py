"""The API key store: SQLite, hashes at rest, 0600, changes seen across processes, keys.json migrated."""

from __future__ import annotations

import stat
import string
import threading
import time
from pathlib import Path

import msgspec
import pytest

import edge_run.keys.store as keys_module
from edge_run.keys import KeyRecord, KeyStore, KeyStoreError

URLSAFE = set(string.ascii_letters + string.digits + "-_")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "keys.sqlite3"


@pytest.fixture
def store(path: Path) -> KeyStore:
    return KeyStore(path)


def test_create_returns_prefixed_random_key(store: KeyStore) -> None:
    key, record = store.create()
    assert key.startswith("er-")
    body = key[len("er-") :]
    assert len(body) >= 43
    assert set(body) <= URLSAFE
    assert record.name == "key-1"
    assert record.prefix == key[:10]
    assert len(record.sha256) == 64
    assert store.create()[0] != key


def test_verify(store: KeyStore) -> None:
    key, _ = store.create()
    other, _ = KeyStore(store.path.with_name("other.sqlite3")).create()
    assert store.verify(key)
    assert not store.verify(key + "x")
    assert not store.verify(key[:-1])
    assert not store.verify("")
    assert not store.verify(other)


def test_file_is_0600_in_a_0700_dir_and_holds_no_plaintext(store: KeyStore, path: Path) -> None:
    key, record = store.create()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for file in path.parent.iterdir():  # the database and its WAL files
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    store.close()
    data = path.read_bytes()
    assert key.encode() not in data
    assert key[len("er-") :].encode() not in data
    assert record.sha256.encode() in data


def test_list_shows_name_and_prefix(store: KeyStore) -> None:
    assert store.list() == []
    key1, _ = store.create("laptop")
    key2, _ = store.create()
    listed = store.list()
    assert [(r.name, r.prefix) for r in listed] == [("laptop", key1[:10]), ("key-1", key2[:10])]
    assert all(isinstance(r, KeyRecord) for r in listed)
    assert key1 not in repr(listed)


def test_default_names_fill_the_first_gap(store: KeyStore) -> None:
    for _ in range(3):
        store.create()
    store.revoke("key-2")
    assert store.create()[1].name == "key-2"
    assert store.create()[1].name == "key-4"


def test_revoke_by_name(store: KeyStore) -> None:
    key, _ = store.create("ci")
    kept, _ = store.create("laptop")
    assert store.revoke("ci").name == "ci"
    assert not store.verify(key)
    assert store.verify(kept)
    assert [r.name for r in store.list()] == ["laptop"]


@pytest.mark.parametrize("length", [6, 8, 10])
def test_revoke_by_prefix(store: KeyStore, length: int) -> None:
    key, record = store.create()
    assert store.revoke(key[:length]) == record
    assert not store.verify(key)


def test_revoke_by_full_key(store: KeyStore) -> None:
    key, record = store.create()
    assert store.revoke(key) == record
    assert not store.verify(key)


def test_revoke_unknown(store: KeyStore) -> None:
    store.create()
    with pytest.raises(KeyError, match="nope"):
        store.revoke("nope")
    # Too short to count as a prefix, even though every key starts with it.
    with pytest.raises(KeyError):
        store.revoke("er-")


def test_revoke_unknown_full_key_is_not_echoed(store: KeyStore) -> None:
    other, _ = KeyStore(store.path.with_name("other.sqlite3")).create()
    with pytest.raises(KeyError) as info:
        store.revoke(other)
    assert other not in str(info.value)


def test_revoke_ambiguous_prefix(path: Path) -> None:
    # Random prefixes practically never collide, so craft a legacy file where two do, and migrate it.
    records = [
        KeyRecord(name=name, prefix="er-sameABC", sha256="0" * 63 + str(i), created=0) for i, name in enumerate("ab")
    ]
    legacy = path.with_name("keys.json")
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(msgspec.json.encode({"keys": records}))
    store = KeyStore(path, legacy=legacy)
    with pytest.raises(ValueError, match="ambiguous"):
        store.revoke("er-same")
    assert len(store.list()) == 2
    assert store.revoke("a").name == "a"


def test_duplicate_name(store: KeyStore) -> None:
    store.create("ci")
    with pytest.raises(ValueError, match="ci"):
        store.create("ci")
    with pytest.raises(ValueError):
        store.create("  ")
    assert len(store.list()) == 1


def test_revoke_in_another_process_is_seen_without_restart(path: Path) -> None:
    server = KeyStore(path)
    key, _ = server.create()
    assert server.verify(key)

    cli = KeyStore(path)
    cli.revoke(key[:10])

    assert not server.verify(key)
    assert server.list() == []


def test_create_in_another_process_is_seen_without_restart(path: Path) -> None:
    server = KeyStore(path)
    assert not server.verify("er-whatever")
    key, _ = KeyStore(path).create()
    assert server.verify(key)


def test_env_key_verifies_and_is_never_written(path: Path) -> None:
    env_key = "er-from-the-environment-0123456789"
    store = KeyStore(path, env_key=env_key)
    assert store.verify(env_key)
    assert not store.verify(env_key + "x")
    assert store.verify(env_key).role == "admin"

    stored, _ = store.create()
    assert store.verify(stored)
    assert store.verify(env_key)
    store.close()
    assert env_key.encode() not in path.read_bytes()
    assert [r.name for r in store.list()] == ["key-1"]


def test_is_empty(path: Path) -> None:
    assert KeyStore(path).is_empty()
    assert not KeyStore(path, env_key="er-env-key-value").is_empty()
    assert KeyStore(path, env_key="").is_empty()
    store = KeyStore(path)
    key, _ = store.create()
    assert not store.is_empty()
    store.revoke(key)
    assert store.is_empty()


@pytest.mark.parametrize("data", [b"not a database at all, just some bytes" * 100])
def test_corrupt_database_is_an_error_not_empty(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    with pytest.raises(KeyStoreError, match=str(path)) as info:
        KeyStore(path).list()
    assert isinstance(info.value, ValueError)
    with pytest.raises(KeyStoreError):
        KeyStore(path).verify("er-anything")
    assert path.read_bytes() == data, "a corrupt database must not be overwritten"


@pytest.mark.parametrize("data", [b"", b"{not json", b"[]", b'{"keys": [{"name": 1}]}'])
def test_a_corrupt_legacy_file_is_an_error_and_kept(path: Path, data: bytes) -> None:
    legacy = path.with_name("keys.json")
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(data)
    with pytest.raises(KeyStoreError, match=r"keys\.json"):
        KeyStore(path, legacy=legacy).list()
    assert legacy.read_bytes() == data


def test_keys_json_is_migrated_once(path: Path) -> None:
    old = KeyRecord(name="laptop", prefix="er-abcdefg", sha256="a" * 64, created=1700000000)
    legacy = path.with_name("keys.json")
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(msgspec.json.encode({"keys": [old]}))
    store = KeyStore(path, legacy=legacy)
    assert store.list() == [old]
    assert not legacy.exists() and legacy.with_name("keys.json.migrated").exists()
    assert KeyStore(path, legacy=legacy).list() == [old]  # nothing to migrate the second time


def test_attributes_are_stored_updated_and_checked(store: KeyStore) -> None:
    key, record = store.create("alice", models=("acme/*", "x"), rpm=3, role="user")
    assert (record.models, record.rpm, record.tpm) == (("acme/*", "x"), 3, None)
    assert store.verify(key) == record
    assert record.allows("acme/one") and record.allows("x") and not record.allows("other/acme")
    updated = store.update("alice", rpm=None, tpm=100, expires=int(time.time()) - 1)
    assert store.verify(key) == updated
    assert (updated.rpm, updated.tpm, updated.models) == (None, 100, ("acme/*", "x"))
    assert updated.expired() and not record.expired()
    with pytest.raises(KeyError):
        store.update("nobody", rpm=1)
    assert KeyRecord(name="n", prefix="p", sha256="0" * 64, created=0).allows("anything")


def test_concurrent_creates_from_many_connections_lose_nothing(path: Path) -> None:
    server = KeyStore(path)
    server.create("first")
    made: list[str] = []

    def create_some(i: int) -> None:
        cli = KeyStore(path)  # another "process": its own connection
        for j in range(10):
            made.append(cli.create(f"k{i}-{j}")[0])

    threads = [threading.Thread(target=create_some, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        server.verify("er-busy-server")  # the server keeps verifying meanwhile
    for t in threads:
        t.join()
    assert len(server.list()) == 41
    assert all(server.verify(k) for k in made)


def test_verify_compares_every_hash_without_early_exit(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(path, env_key="er-env-key-value")
    first, _ = store.create()
    store.create()
    store.create()
    store.list()  # load before counting

    calls = 0
    real = keys_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    assert store.verify(first)
    assert calls == 4  # three stored keys and the env key
    calls = 0
    assert not store.verify("er-wrong")
    assert calls == 4
