"""The API key store: SQLite (WAL, file mode 0600), keys kept only as hashes.

A key is shown once, when it is created; the database keeps its SHA-256, a short prefix that is safe to
display, and its attributes: a role, the models it may use (globs), its limits and its expiry. Several
processes may use the database at once (``edge-run keys create`` beside a running server): SQLite
serialises the writes, and ``verify`` notices another process's change (``PRAGMA data_version``), so a
revoked key is refused from the next request. A ``keys.json`` from older versions is moved in once.
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["ENV_KEY_NAME", "LIMITS", "KeyRecord", "KeyStore", "KeyStoreError"]

KEY_PREFIX = "er-"
SHOWN_CHARS = 10
# Shorter prefixes than "er-" plus three random characters would match keys by accident.
MIN_PREFIX_MATCH = 6
ENV_KEY_NAME = "env"  # the record of EDGE_RUN_API_KEY: an admin key without limits, never stored
LIMITS = ("rpm", "tpm", "max_parallel", "daily_tokens")

Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Role = Literal["user", "admin"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    role TEXT NOT NULL DEFAULT 'user',
    models TEXT NOT NULL DEFAULT '',
    rpm INTEGER,
    tpm INTEGER,
    max_parallel INTEGER,
    daily_tokens INTEGER,
    expires INTEGER
);
CREATE TABLE IF NOT EXISTS usage (
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    status INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_by_key ON usage (key, ts);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (ts);
"""
COLUMNS = ("name", "prefix", "sha256", "created", "role", "models", *LIMITS, "expires")


class KeyStoreError(ValueError):
    """The key database exists but cannot be used; the message names its path."""


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One key as stored. Holds nothing from which the key can be recovered.

    ``models`` are glob patterns (``team/*``); empty means every model. Limits left as None are off.
    ``expires`` is a Unix time.
    """

    name: str
    prefix: str
    sha256: Sha256Hex
    created: int
    role: Role = "user"
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    daily_tokens: int | None = None
    expires: int | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def allows(self, model_id: str) -> bool:
        """Whether this key may use ``model_id``."""
        return not self.models or any(fnmatch.fnmatchcase(model_id, p) for p in self.models)

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (time.time() if now is None else now) >= self.expires


class _LegacyFile(msgspec.Struct):
    keys: builtins.list[KeyRecord] = msgspec.field(default_factory=builtins.list)


def _digest(key: str) -> bytes:
    # surrogatepass keeps the encoding one-to-one for any str a header could decode to.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _shown(text: str) -> str:
    """What of a user-supplied string may go into a message: it might be a full key."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _record(row: sqlite3.Row) -> KeyRecord:
    fields = dict(zip(COLUMNS, row, strict=True))
    fields["models"] = tuple(p for p in fields["models"].split(",") if p)
    return KeyRecord(**fields)


def _row(record: KeyRecord) -> tuple[Any, ...]:
    return tuple(",".join(record.models) if c == "models" else getattr(record, c) for c in COLUMNS)


class KeyStore:
    """API keys in one SQLite database, plus an optional key from the environment that is never written.

    Args:
        path: The database, usually ``Paths.keys_db``. Created (0600) on first use.
        env_key: A plaintext key from ``EDGE_RUN_API_KEY``; accepted by ``verify`` as an admin key
            without limits, kept only as a hash.
        legacy: A ``keys.json`` of older versions to move in, once, then rename to ``keys.json.migrated``.
    """

    def __init__(self, path: Path, env_key: str | None = None, *, legacy: Path | None = None) -> None:
        self.path = path
        self._env = (
            KeyRecord(name=ENV_KEY_NAME, prefix=env_key[:SHOWN_CHARS], sha256=_digest(env_key).hex(), created=0,
                      role="admin")
            if env_key
            else None
        )  # fmt: skip
        self._local = threading.local()  # one connection per thread
        self._lock = threading.Lock()
        self._version: tuple[int, int] | None = None  # (connection id, data_version) of the cache
        self._records: tuple[KeyRecord, ...] = ()
        self._digests: tuple[bytes, ...] = ()
        self._legacy = legacy

    # -- the database ----------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (usage writes use their own thread's)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            # created 0600 before SQLite opens it: the umask can only remove bits
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
            if "reasoning_tokens" not in columns:  # a database from before thinking models
                conn.execute("ALTER TABLE usage ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0")
        except sqlite3.DatabaseError as exc:
            raise KeyStoreError(f"The key database {self.path} cannot be used ({exc}). Fix or delete it.") from None
        for extra in ("-wal", "-shm"):  # SQLite makes them with the umask's mode
            with contextlib.suppress(OSError):
                os.chmod(self.path.with_name(self.path.name + extra), 0o600)
        if self._legacy is not None:
            self._migrate(conn, self._legacy)
        return conn

    def _migrate(self, conn: sqlite3.Connection, legacy: Path) -> None:
        try:
            data = legacy.read_bytes()
        except FileNotFoundError:
            return
        try:
            records = msgspec.json.decode(data, type=_LegacyFile).keys
        except msgspec.DecodeError as exc:
            raise KeyStoreError(f"The key file {legacy} is corrupt ({exc}). Fix or delete it.") from None
        with self.transaction(conn):
            conn.executemany(
                f"INSERT OR IGNORE INTO keys ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                [_row(r) for r in records],
            )
        os.replace(legacy, legacy.with_name(legacy.name + ".migrated"))

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection (or ``conn``), committed when the block ends."""
        conn = conn or self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._version = None  # data_version counts only other connections' changes

    # -- keys ------------------------------------------------------------------------

    def create(self, name: str | None = None, **attributes: Any) -> tuple[str, KeyRecord]:
        """Make and store a new key.

        Args:
            name: A unique label; ``key-1``, ``key-2``, ... (the first unused) when omitted.
            attributes: ``role``, ``models``, ``rpm``, ``tpm``, ``max_parallel``, ``daily_tokens``, ``expires``.

        Returns:
            The plaintext key, which is not kept anywhere, and its record.

        Raises:
            ValueError: The name is empty or already taken.
        """
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.transaction() as conn:
            taken = {row[0] for row in conn.execute("SELECT name FROM keys")}
            if name is None:
                n = 1
                while f"key-{n}" in taken:
                    n += 1
                name = f"key-{n}"
            else:
                name = name.strip()
                if not name:
                    raise ValueError("A key name cannot be empty.")
                if name in taken or name == ENV_KEY_NAME:
                    raise ValueError(f"A key named {name!r} already exists.")
            record = KeyRecord(
                name=name, prefix=key[:SHOWN_CHARS], sha256=_digest(key).hex(), created=int(time.time()), **attributes
            )
            conn.execute(
                f"INSERT INTO keys ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})", _row(record)
            )
        return key, record

    def update(self, name: str, **attributes: Any) -> KeyRecord:
        """Change a key's attributes (``None`` turns a limit off); raises ``KeyError`` for an unknown name."""
        with self.transaction() as conn:
            row = conn.execute(f"SELECT {','.join(COLUMNS)} FROM keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise KeyError(f"No key is named {_shown(name)!r}; see `edge-run keys list`.")
            record = msgspec.structs.replace(_record(row), **attributes)
            sets = ",".join(f"{c} = ?" for c in COLUMNS)
            conn.execute(f"UPDATE keys SET {sets} WHERE name = ?", (*_row(record), name))
        return record

    def revoke(self, name_or_prefix: str) -> KeyRecord:
        """Delete one key, found by exact name, else by a prefix of at least six characters.

        A full key also works: it starts with its record's prefix.

        Raises:
            KeyError: Nothing matches.
            ValueError: The prefix matches more than one key.
        """
        s = name_or_prefix
        with self.transaction() as conn:
            records = [_record(r) for r in conn.execute(f"SELECT {','.join(COLUMNS)} FROM keys")]
            matches = [r for r in records if r.name == s]
            if not matches and len(s) >= MIN_PREFIX_MATCH:
                matches = [r for r in records if s.startswith(r.prefix) or r.prefix.startswith(s)]
            if not matches:
                raise KeyError(f"No key is named or starts with {_shown(s)!r}; see `edge-run keys list`.")
            if len(matches) > 1:
                names = ", ".join(r.name for r in matches)
                raise ValueError(f"{_shown(s)!r} is ambiguous: it matches {names}. Give the name instead.")
            (record,) = matches
            conn.execute("DELETE FROM keys WHERE name = ?", (record.name,))
        return record

    def verify(self, presented: str) -> KeyRecord | None:
        """The record of ``presented`` if it is a stored key or the environment key, else None.

        Compares its hash against every known hash with no early exit, so the time taken does not
        reveal which key matched or how much of one did. An expired key is returned: the caller says why
        it is refused.
        """
        records, digests = self._current()
        if self._env is not None:
            records, digests = (*records, self._env), (*digests, bytes.fromhex(self._env.sha256))
        candidate = _digest(presented)
        found: KeyRecord | None = None
        for record, digest in zip(records, digests, strict=True):
            if hmac.compare_digest(candidate, digest):
                found = record
        return found

    def is_empty(self) -> bool:
        """No stored keys and no environment key: nothing could pass ``verify``."""
        return not self._current()[0] and self._env is None

    def list(self) -> builtins.list[KeyRecord]:
        """The stored keys in creation order (the environment key is not listed)."""
        return builtins.list(self._current()[0])

    def get(self, name: str) -> KeyRecord | None:
        return next((r for r in self._current()[0] if r.name == name), None)

    def _current(self) -> tuple[tuple[KeyRecord, ...], tuple[bytes, ...]]:
        """Records and their digests, read again when any connection changed the database since."""
        conn = self.connect()
        with self._lock:
            version = (id(conn), conn.execute("PRAGMA data_version").fetchone()[0])
            if version != self._version:
                rows = conn.execute(f"SELECT {','.join(COLUMNS)} FROM keys ORDER BY created, rowid").fetchall()
                self._records = tuple(_record(r) for r in rows)
                self._digests = tuple(bytes.fromhex(r.sha256) for r in self._records)
                self._version = version
            return self._records, self._digests

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
