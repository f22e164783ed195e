"""A local stand-in for the Hugging Face Hub: enough of its HTTP API for ``huggingface_hub`` 2.4 to pull from.

Routes served (model repos only, revisions ``main`` and the repo's one commit sha):

- ``GET  /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: ``HfApi.model_info`` (siblings carry
  ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``);
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]``: ``list_repo_tree`` / ``list_repo_files`` (one page);
- ``POST /api/models/{repo}/paths-info/{rev}``: ``get_paths_info``;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: ``hf_hub_download`` (``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``, ``X-Linked-Size``, ``Content-Length``, ``Range`` answered with 206).

A download can be cut (:meth:`HubFixture.cut_once`), or held halfway until the test lets it go on
(:meth:`HubFixture.pause_once`): a pull under way, with no timing involved.

Errors carry the ``X-Error-Code`` header huggingface_hub maps to its exceptions (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``). No Xet headers are ever sent, so downloads are plain HTTP.
``.gguf`` files are LFS files (their ETag is the content's sha256); anything else is a plain git blob.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

__all__ = ["HubFixture"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubFixture:
    """A Hub-compatible HTTP server on 127.0.0.1 serving fake model repos; use it as a context manager.

    Args:
        repos: ``"owner/repo"`` to ``{filename: content}``; filenames may contain ``/``.
        gated: ``"owner/repo"`` to the token its files require (``Authorization: Bearer TOKEN``);
            its metadata stays public, as on the Hub.

    Attributes:
        url: the server's base URL, for ``HF_ENDPOINT`` (set once started).
        requests: ``(method, path with query, headers with lower-case names)`` of every request seen.
    """

    def __init__(self, repos: Mapping[str, Mapping[str, bytes]], *, gated: Mapping[str, str] | None = None) -> None:
        self._repos = {repo: dict(files) for repo, files in repos.items()}
        self._gated = dict(gated or {})
        self._commits = {repo: self._commit_of(repo, files) for repo, files in self._repos.items()}
        self._lies: set[tuple[str, str]] = set()
        self._cuts: dict[tuple[str, str], int] = {}
        self._pauses: dict[tuple[str, str], tuple[int, threading.Event]] = {}
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    # -- test controls ------------------------------------------------------------------------

    def commit(self, repo: str) -> str:
        """The 40-hex commit sha that ``main`` resolves to for ``repo``."""
        return self._commits[repo]

    def sha256(self, repo: str, filename: str) -> str:
        """The sha256 the Hub advertises for a file: the true one unless :meth:`lie_about_sha` was called."""
        true = hashlib.sha256(self._repos[repo][filename]).hexdigest()
        if (repo, filename) in self._lies:
            return hashlib.sha256(true.encode()).hexdigest()
        return true

    def lie_about_sha(self, repo: str, filename: str) -> None:
        """From now on, advertise a wrong sha256 (API metadata and ETag) for the file; the content stays true."""
        self._known(repo, filename)
        self._lies.add((repo, filename))

    def cut_once(self, repo: str, filename: str, after_bytes: int) -> None:
        """Make the next GET of the file send its full headers, then ``after_bytes`` of body, then close the socket."""
        self._known(repo, filename)
        with self._lock:
            self._cuts[(repo, filename)] = after_bytes

    def pause_once(self, repo: str, filename: str, after_bytes: int) -> threading.Event:
        """Make the next GET of the file send ``after_bytes`` of body, then wait until the returned event is set
        (a download held halfway, with no timing involved), then send the rest."""
        self._known(repo, filename)
        resume = threading.Event()
        with self._lock:
            self._pauses[(repo, filename)] = (after_bytes, resume)
        return resume

    def gets_of(self, repo: str, filename: str) -> list[dict[str, str]]:
        """Headers of every GET of the file's ``resolve`` URL seen so far."""
        suffix = f"/{repo}/resolve/"
        with self._lock:
            seen = list(self.requests)
        return [
            headers
            for method, path, headers in seen
            if method == "GET" and path.startswith(suffix) and unquote(path.split("?")[0]).endswith("/" + filename)
        ]

    def _known(self, repo: str, filename: str) -> None:
        if filename not in self._repos.get(repo, {}):
            raise KeyError(f"the fixture serves no {repo}/{filename}")

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> HubFixture:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        fixture = self

        class Handler(_Handler):
            hub = fixture

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="hub-fixture", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubFixture:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what the Hub would say ---------------------------------------------------------------

    @staticmethod
    def _commit_of(repo: str, files: Mapping[str, bytes]) -> str:
        digest = hashlib.sha1(repo.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        return digest.hexdigest()

    def _is_lfs(self, filename: str) -> bool:
        return filename.lower().endswith(".gguf")

    def _etag(self, repo: str, filename: str) -> str:
        if self._is_lfs(filename):
            return self.sha256(repo, filename)
        return _git_blob_sha1(self._repos[repo][filename])

    def _entry(self, repo: str, filename: str, *, tree: bool) -> dict[str, Any]:
        """One file as the Hub's JSON describes it: a model_info sibling, or a tree / paths-info entry."""
        data = self._repos[repo][filename]
        blob = data
        lfs: dict[str, Any] | None = None
        if self._is_lfs(filename):
            sha = self.sha256(repo, filename)
            blob = _lfs_pointer(sha, len(data))
            lfs = {"size": len(data), "pointerSize": len(blob), ("oid" if tree else "sha256"): sha}
        entry: dict[str, Any] = {"size": len(data)}
        if tree:
            entry.update(type="file", path=filename, oid=_git_blob_sha1(blob))
        else:
            entry.update(rfilename=filename, blobId=_git_blob_sha1(blob))
        if lfs is not None:
            entry["lfs"] = lfs
        return entry

    def _folders(self, repo: str) -> set[str]:
        return {"/".join(name.split("/")[:i]) for name in self._repos[repo] for i in range(1, name.count("/") + 1)}

    def model_info(self, repo: str) -> dict[str, Any]:
        """The JSON of ``GET /api/models/{repo}/revision/{rev}?blobs=true``."""
        return {
            "_id": self._commits[repo][:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": self._commits[repo],
            "private": False,
            "gated": "manual" if repo in self._gated else False,
            "disabled": False,
            "tags": ["gguf"],
            "siblings": [self._entry(repo, name, tree=False) for name in sorted(self._repos[repo])],
        }

    def tree(self, repo: str, path: str, recursive: bool) -> list[dict[str, Any]]:
        """The JSON of ``GET /api/models/{repo}/tree/{rev}/{path}``."""
        prefix = f"{path}/" if path else ""
        out: list[dict[str, Any]] = []
        for folder in sorted(self._folders(repo)):
            if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix) :]):
                out.append({"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest()})
        for name in sorted(self._repos[repo]):
            if name.startswith(prefix) and (recursive or "/" not in name[len(prefix) :]):
                out.append(self._entry(repo, name, tree=True))
        return out

    def paths_info(self, repo: str, paths: list[str]) -> list[dict[str, Any]]:
        """The JSON of ``POST /api/models/{repo}/paths-info/{rev}``: unknown paths are left out, as on the Hub."""
        folders = self._folders(repo)
        out: list[dict[str, Any]] = []
        for path in paths:
            if path in self._repos[repo]:
                out.append(self._entry(repo, path, tree=True))
            elif path in folders:
                out.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
        return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubFixture

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    # -- routing ------------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        hub = self.hub
        body = b""
        if method == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with hub._lock:
            hub.requests.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = parse_qs(split.query)

        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = "/".join(parts[2:4])
            rest = parts[4:]
            if not self._repo_ok(repo):
                return
            if method == "GET" and (not rest or (rest[0] == "revision" and len(rest) == 2)):
                if rest and not self._revision_ok(repo, rest[1]):
                    return
                self._json(hub.model_info(repo))
                return
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                if not self._revision_ok(repo, rest[1]):
                    return
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                self._json(hub.tree(repo, "/".join(rest[2:]), recursive))
                return
            if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                if not self._revision_ok(repo, rest[1]):
                    return
                self._json(hub.paths_info(repo, parse_qs(body.decode()).get("paths", [])))
                return
        elif method in ("HEAD", "GET") and len(parts) >= 5 and parts[2] == "resolve":
            repo = "/".join(parts[:2])
            if not self._repo_ok(repo) or not self._revision_ok(repo, parts[3]) or not self._auth_ok(repo):
                return
            self._file(method, repo, "/".join(parts[4:]))
            return
        self._error(404, "NotFound", f"no route for {method} {split.path}")

    def _repo_ok(self, repo: str) -> bool:
        if repo in self.hub._repos:
            return True
        self._error(404, "RepoNotFound", "Repository not found")
        return False

    def _revision_ok(self, repo: str, revision: str) -> bool:
        if revision in ("main", self.hub.commit(repo)):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return False

    def _auth_ok(self, repo: str) -> bool:
        token = self.hub._gated.get(repo)
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._error(401, "GatedRepo", f"Access to model {repo} is restricted. You must have access to it.")
        return False

    # -- responses ----------------------------------------------------------------------------

    def _file(self, method: str, repo: str, filename: str) -> None:
        hub = self.hub
        data = hub._repos[repo].get(filename)
        if data is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist", commit=hub.commit(repo))
            return
        total = len(data)
        start, end, status = 0, total - 1, 200
        range_header = self.headers.get("Range")
        if range_header is not None:
            match = _RANGE.match(range_header.strip())
            if match is None or int(match.group(1)) >= total:
                extra = {"Content-Range": f"bytes */{total}"}
                self._error(416, "RangeNotSatisfiable", f"bad range {range_header!r}", extra=extra)
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
            status = 206
        etag = hub._etag(repo, filename)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", hub.commit(repo))
        if hub._is_lfs(filename):
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(total))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        if method == "HEAD":
            return
        with hub._lock:
            cut = hub._cuts.pop((repo, filename), None)
            pause = hub._pauses.pop((repo, filename), None)
        body = data[start : end + 1]
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        try:
            if pause is not None:
                self.wfile.write(body[: pause[0]])
                self.wfile.flush()
                pause[1].wait(timeout=120)
                body = body[pause[0] :]
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a cancelled pull)
            self.close_connection = True

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(
        self, status: int, code: str, message: str, *, commit: str | None = None, extra: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
