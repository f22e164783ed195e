"""The API key store: hashes at rest, 0600, atomic writes, revocation seen across processes."""

from __future__ import annotations

import os
import stat
import string
from pathlib import Path

import msgspec
import pytest

import edge_run.keys as keys_module
from edge_run.keys import KeyRecord, KeyStore, KeyStoreError

URLSAFE = set(string.ascii_letters + string.digits + "-_")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "keys.json"


@pytest.fixture
def store(path: Path) -> KeyStore:
    return KeyStore(path)


def bump_mtime(path: Path) -> None:
    """Move the mtime well past the last load, so the test does not depend on timestamp resolution."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


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
    other, _ = KeyStore(store.path.with_name("other.json")).create()
    assert store.verify(key)
    assert not store.verify(key + "x")
    assert not store.verify(key[:-1])
    assert not store.verify("")
    assert not store.verify(other)


def test_file_is_0600_in_a_0700_dir_and_holds_no_plaintext(store: KeyStore, path: Path) -> None:
    key, record = store.create()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert key.encode() not in data
    assert key[len("er-") :].encode() not in data
    assert record.sha256.encode() in data
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"], "temp file left behind"


def test_mode_stays_0600_after_rewrites(store: KeyStore, path: Path) -> None:
    store.create("a")
    path.chmod(0o644)
    store.create("b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


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
    other, _ = KeyStore(store.path.with_name("other.json")).create()
    with pytest.raises(KeyError) as info:
        store.revoke(other)
    assert other not in str(info.value)


def test_revoke_ambiguous_prefix(path: Path) -> None:
    # Random prefixes practically never collide, so craft a file where two do.
    records = [KeyRecord(name, "er-sameABC", "0" * 63 + str(i), 0) for i, name in enumerate(["a", "b"])]
    path.parent.mkdir(parents=True)
    path.write_bytes(msgspec.json.encode({"keys": records}))
    store = KeyStore(path)
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
    bump_mtime(path)

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
    assert not path.exists()

    stored, _ = store.create()
    assert store.verify(stored)
    assert store.verify(env_key)
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


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"keys": [{"name": 1}]}',
        b'{"keys": [{"name": "a", "prefix": "er-abcdefg", "sha256": "not-hex", "created": 0}]}',
    ],
)
def test_corrupt_file_is_an_error_not_empty(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    store = KeyStore(path)
    with pytest.raises(KeyStoreError, match=str(path)) as info:
        store.list()
    assert isinstance(info.value, ValueError)
    with pytest.raises(KeyStoreError):
        store.verify("er-anything")
    with pytest.raises(KeyStoreError):
        store.is_empty()
    with pytest.raises(KeyStoreError):
        store.create()
    assert path.read_bytes() == data, "a corrupt file must not be overwritten"


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
