"""The local API key store: only hashes at rest, in a 0600 JSON file.

A key is shown once, when it is created. The file keeps its SHA-256 and a short prefix
that is safe to display. ``verify`` notices when another process (``edge-run keys revoke``)
rewrote the file, so a running server drops a revoked key without a restart.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated

import msgspec

__all__ = ["KeyRecord", "KeyStore", "KeyStoreError"]

KEY_PREFIX = "er-"
SHOWN_CHARS = 10
# Shorter prefixes than "er-" plus three random characters would match keys by accident.
MIN_PREFIX_MATCH = 6

Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]

# (st_ino, st_mtime_ns, st_size) of the file last loaded; None when it did not exist.
Signature = tuple[int, int, int] | None
# Never equal to a real signature, so the next read reloads the file.
STALE: Signature = (-1, -1, -1)


class KeyStoreError(ValueError):
    """The key file exists but cannot be read as a key file; the message names its path."""


class KeyRecord(msgspec.Struct, frozen=True):
    """One key as stored on disk. Holds nothing from which the key can be recovered."""

    name: str
    prefix: str
    sha256: Sha256Hex
    created: int


class KeyFile(msgspec.Struct):
    """The whole file: ``{"keys": [...]}``."""

    keys: builtins.list[KeyRecord] = msgspec.field(default_factory=builtins.list)


_decoder = msgspec.json.Decoder(KeyFile)
_encoder = msgspec.json.Encoder()


def _digest(key: str) -> bytes:
    # surrogatepass keeps the encoding one-to-one for any str a header could decode to.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _shown(text: str) -> str:
    """What of a user-supplied string may go into a message: it might be a full key."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


class KeyStore:
    """API keys in one file, plus an optional key from the environment that is never written.

    Args:
        path: The key file, usually ``Paths.keys_file``. Missing means no keys.
        env_key: A plaintext key from ``EDGE_RUN_API_KEY``; accepted by ``verify``, kept only as a hash.
    """

    def __init__(self, path: Path, env_key: str | None = None) -> None:
        self.path = path
        self._env_digest = _digest(env_key) if env_key else None
        self._lock = threading.Lock()
        self._signature: Signature = STALE
        self._records: tuple[KeyRecord, ...] = ()
        self._digests: tuple[bytes, ...] = ()

    def create(self, name: str | None = None) -> tuple[str, KeyRecord]:
        """Make and store a new key.

        Args:
            name: A unique label; ``key-1``, ``key-2``, ... (the first unused) when omitted.

        Returns:
            The plaintext key, which is not kept anywhere, and its record.

        Raises:
            ValueError: The name is empty or already taken.
        """
        with self._lock:
            records = self._load()
            taken = {r.name for r in records}
            if name is None:
                n = 1
                while f"key-{n}" in taken:
                    n += 1
                name = f"key-{n}"
            else:
                name = name.strip()
                if not name:
                    raise ValueError("A key name cannot be empty.")
                if name in taken:
                    raise ValueError(f"A key named {name!r} already exists.")
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            record = KeyRecord(
                name=name,
                prefix=key[:SHOWN_CHARS],
                sha256=_digest(key).hex(),
                created=int(time.time()),
            )
            self._write((*records, record))
        return key, record

    def revoke(self, name_or_prefix: str) -> KeyRecord:
        """Delete one key, found by exact name, else by a prefix of at least six characters.

        A full key also works: it starts with its record's prefix.

        Raises:
            KeyError: Nothing matches.
            ValueError: The prefix matches more than one key.
        """
        s = name_or_prefix
        with self._lock:
            records = self._load()
            matches = [r for r in records if r.name == s]
            if not matches and len(s) >= MIN_PREFIX_MATCH:
                matches = [r for r in records if s.startswith(r.prefix) or r.prefix.startswith(s)]
            if not matches:
                raise KeyError(f"No key is named or starts with {_shown(s)!r}; see `edge-run keys list`.")
            if len(matches) > 1:
                names = ", ".join(r.name for r in matches)
                raise ValueError(f"{_shown(s)!r} is ambiguous: it matches {names}. Give the name instead.")
            (record,) = matches
            self._write(tuple(r for r in records if r is not record))
        return record

    def verify(self, presented: str) -> bool:
        """Whether ``presented`` is a stored key or the environment key.

        Compares its hash against every known hash with no early exit, so the time taken
        does not reveal which key matched or how much of one did.

        Raises:
            KeyStoreError: The key file is corrupt; failing closed beats guessing.
        """
        digests = self._current()[1]
        if self._env_digest is not None:
            digests = (*digests, self._env_digest)
        candidate = _digest(presented)
        ok = False
        for digest in digests:
            ok |= hmac.compare_digest(candidate, digest)
        return ok

    def is_empty(self) -> bool:
        """No stored keys and no environment key: nothing could pass ``verify``."""
        return not self._current()[0] and self._env_digest is None

    def list(self) -> builtins.list[KeyRecord]:
        """The stored keys in creation order (the environment key is not listed)."""
        return builtins.list(self._current()[0])

    def _current(self) -> tuple[tuple[KeyRecord, ...], tuple[bytes, ...]]:
        """Records and their digests, reloaded first if the file changed since the last load."""
        with self._lock:
            if self._stat() != self._signature:
                self._load()
            return self._records, self._digests

    def _stat(self) -> Signature:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> tuple[KeyRecord, ...]:
        """Read the file and refresh the cache. Call with the lock held."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            records: tuple[KeyRecord, ...] = ()
            signature: Signature = None
        else:
            try:
                records = tuple(_decoder.decode(data).keys)
            except msgspec.DecodeError as exc:
                raise KeyStoreError(
                    f"The key file {self.path} is corrupt ({exc}). Fix or delete it, then create new keys."
                ) from None
            # The signature of what was actually read, so a write racing this read forces a reload.
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._records = records
        self._digests = tuple(bytes.fromhex(r.sha256) for r in records)
        self._signature = signature
        return records

    def _write(self, records: tuple[KeyRecord, ...]) -> None:
        """Replace the file atomically with ``records``. Call with the lock held."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = _encoder.encode(KeyFile(keys=builtins.list(records)))
        tmp = directory / f".{self.path.name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                if hasattr(os, "fchmod"):
                    # The umask can only remove bits; this makes the mode exactly 0600 regardless.
                    os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # Make the rename itself durable; directories cannot be opened this way on Windows.
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        # Reload on next use rather than trust that no other process wrote in between.
        self._signature = STALE
