"""A Hugging Face Hub stand-in on 127.0.0.1, for tests and the download bench.

It implements what ``huggingface_hub`` 2.4 calls to download a model:

- ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=True`` adds sizes and LFS info to ``siblings``)
- ``GET /api/models/{repo}/tree/{rev}`` (the listing ``snapshot_download`` takes at a commit sha)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small files are served directly with ``ETag`` (git blob
  id), ``X-Repo-Commit`` and ``Content-Length``; LFS files answer ``302`` to a "CDN" on another host
  name (``localhost``), with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``, as the real Hub does
- ``GET /cdn-lfs/{sha256}``: the LFS bytes, without auth
- ``Range: bytes=N-[M]`` on file bodies (``206``), as used to resume
- ``static``: plain files at fixed paths (tarballs, the bench's plain-HTTP baseline)

Errors carry the real ``X-Error-Code`` values (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``) and ``X-Error-Message: Invalid credentials in Authorization header``
for an unknown token. As on the real Hub, a gated repo's metadata (``/api/models``) answers anyone
while its files need a token of an account with access; a private repo answers only such a token
(401 ``RepoNotFound`` without a token, 404 with another one). Behaviours for failure tests:
``gated`` / ``private`` repos, ``slow_bps``, ``drop_at`` / ``drop_times`` (close the connection when
a file body reaches byte ``drop_at``, the first ``drop_times`` times per file; ``-1`` = always),
``missing`` (files listed in the metadata whose download answers 404 ``EntryNotFound``: a file
deleted meanwhile), ``api_status`` (every ``/api/`` call answers that HTTP status: the hub is down)
and ``stall_api`` (``/api/`` calls get no answer at all until the server stops).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

__all__ = ["FakeRepo", "HubServer", "Request", "hub_server"]

Content = bytes | Path
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pth", "*.pt", "*.gguf", "*.onnx", "*.h5", "*.msgpack", "*.model")
_CHUNK = 1 << 20


def blob_id(data: bytes) -> str:
    """The git blob sha1 of ``data`` (the Hub's ETag for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _File:
    content: Content
    size: int
    sha256: str
    blob: str
    lfs: bool

    @classmethod
    def of(cls, name: str, content: Content) -> _File:
        data = content.read_bytes() if isinstance(content, Path) else content
        lfs = len(data) > 10_000 or any(fnmatchcase(name.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)
        return cls(content, len(data), hashlib.sha256(data).hexdigest(), blob_id(data), lfs)

    def read(self, start: int, n: int) -> bytes:
        if isinstance(self.content, Path):
            with self.content.open("rb") as f:
                f.seek(start)
                return f.read(n)
        return self.content[start : start + n]


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False
    allowed_tokens: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    auth: str | None
    range: str | None


class HubServer:
    """The fake hub. Use as a context manager; ``endpoint`` is what ``HF_ENDPOINT`` should be."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.valid_tokens: set[str] = set()
        self.requests: list[Request] = []
        self.slow_bps: int | None = None
        self.drop_at: int | None = None
        self.drop_times = 1
        self.drop_files = "*"
        self.echo_token_in_errors = False  # a careless server: lets tests prove the client redacts
        self.missing: set[str] = set()
        self.api_status: int | None = None
        self.stall_api = False
        self._stopped = threading.Event()
        # Plain files at fixed paths (tarballs, the bench's plain-HTTP copy): ETag, ranges, slow, drop.
        self.static: dict[str, bytes | Path] = {}
        self.static_etag = True
        self._drops: dict[str, int] = {}
        self._blobs: dict[str, _File] = {}
        self._static_files: dict[str, _File] = {}
        self._lock = threading.Lock()
        self._commit_counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- repos ---------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, Content],
        *,
        gated: bool = False,
        private: bool = False,
        tokens: tuple[str, ...] = (),
    ) -> str:
        """Create ``repo_id`` with one commit on ``main``; ``tokens`` may read it if gated or private. Returns the sha."""
        self.repos[repo_id] = FakeRepo(gated=gated, private=private, allowed_tokens=set(tokens))
        self.valid_tokens |= set(tokens)
        return self.commit(repo_id, files)

    def commit(self, repo_id: str, files: dict[str, Content], *, branch: str = "main") -> str:
        """A new commit holding exactly ``files``; moves ``branch`` to it. Returns its sha."""
        repo = self.repos[repo_id]
        self._commit_counter += 1
        entries = {name: _File.of(name, content) for name, content in files.items()}
        seed = f"{repo_id}:{self._commit_counter}:" + ",".join(f"{n}={f.blob}" for n, f in sorted(entries.items()))
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = entries
        repo.refs[branch] = sha
        for f in entries.values():
            if f.lfs:
                self._blobs[f.sha256] = f
        return sha

    # -- observation ---------------------------------------------------------------------------

    def file_gets(self, name: str | None = None) -> list[Request]:
        """GET requests that carried file bytes (the CDN, or resolve of a small file), optionally for one file."""
        out = []
        for r in self.requests:
            if r.method != "GET" or not (r.path.startswith("/cdn-lfs/") or "/resolve/" in r.path):
                continue
            if name is None or r.path.endswith("/" + quote(name)) or r.path.endswith("name=" + quote(name)):
                out.append(r)
        return out

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        hub = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64

            def process_request(self, request: Any, client_address: Any) -> None:
                with hub._lock:
                    hub._conns.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                with hub._lock:
                    hub._conns.discard(request)
                super().shutdown_request(request)

        self._server = Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open (keep-alive) connection: the hub is gone."""
        if self._server is None:
            return
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path = url.path
        auth = h.headers.get("authorization")
        token = auth.split(" ", 1)[1] if auth and " " in auth else None
        with self._lock:
            self.requests.append(Request(method, h.path, auth, h.headers.get("range")))
        if path in self.static:
            content = self.static[path]
            cached = self._static_files.get(path)
            if cached is None or cached.content is not content:
                cached = self._static_files[path] = _File.of(path, content)
            f = cached
            return self._send_file(h, method, f, path, {"ETag": f'"{f.sha256}"'} if self.static_etag else {})
        if path.startswith("/cdn-lfs/"):
            blob = self._blobs.get(path.rsplit("/", 1)[-1])
            if blob is None:
                return _error(h, 404, "EntryNotFound", "no such blob")
            name = parse_qs(url.query).get("name", [""])[0]
            return self._send_file(h, method, blob, name, {})
        if token is not None and token not in self.valid_tokens:
            message = "Invalid credentials in Authorization header"
            body = f"{message} ({token})" if self.echo_token_in_errors else message
            return _error(h, 401, None, message, body=body)
        if path.startswith("/api/") and self.stall_api:
            self._stopped.wait(60)  # bounded: a test's client times out long before
            h.close_connection = True
            return None
        if path.startswith("/api/") and self.api_status is not None:
            return _error(h, self.api_status, None, "Service unavailable")
        if m := re.fullmatch(r"/api/models/([^/]+(?:/[^/]+)?)(?:/(revision|tree)/([^/]+)(?:/.*)?)?", path):
            repo_id, kind, rev = m.group(1), m.group(2), unquote(m.group(3) or "main")
            repo, sha = self._lookup(h, repo_id, rev)
            if repo is None or sha is None:
                return None
            if kind == "tree":
                return _json(h, _tree(repo.commits[sha]))
            blobs = "blobs" in parse_qs(url.query)
            return _json(h, _info(repo_id, repo, sha, blobs=blobs))
        if m := re.fullmatch(r"/([^/]+(?:/[^/]+)?)/resolve/([^/]+)/(.+)", path):
            repo_id, rev, name = m.group(1), unquote(m.group(2)), unquote(m.group(3))
            repo, sha = self._lookup(h, repo_id, rev)
            if repo is None or sha is None:
                return None
            if repo.gated and token is None:
                return _error(h, 401, "GatedRepo", f"Access to model {repo_id} is restricted. Please log in.")
            if repo.gated and token not in repo.allowed_tokens:
                return _error(h, 403, "GatedRepo", f"Access to model {repo_id} is restricted, not in the list.")
            f = repo.commits[sha].get(name)
            if f is None or name in self.missing:
                return _error(h, 404, "EntryNotFound", f"{name} does not exist", extra={"X-Repo-Commit": sha})
            headers = {"X-Repo-Commit": sha}
            if f.lfs:
                location = f"http://localhost:{self.port}/cdn-lfs/{f.sha256}?name={quote(name)}"
                headers |= {
                    "Location": location,
                    "ETag": f'"{f.blob}"',
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(f.size),
                    "Content-Length": "0",
                }
                h.send_response(302)
                for k, v in headers.items():
                    h.send_header(k, v)
                h.end_headers()
                return None
            return self._send_file(h, method, f, name, headers | {"ETag": f'"{f.blob}"'})
        return _error(h, 404, None, f"no route for {path}")

    def _lookup(self, h: BaseHTTPRequestHandler, repo_id: str, rev: str) -> tuple[FakeRepo | None, str | None]:
        repo = self.repos.get(repo_id)
        auth = h.headers.get("authorization")
        token = auth.split(" ", 1)[1] if auth and " " in auth else None
        if repo is not None and repo.private and token not in repo.allowed_tokens:
            repo = None  # the real Hub does not tell a private repo from a missing one
            if token is None:
                _error(h, 401, "RepoNotFound", "Repository not found")
                return None, None
        if repo is None:
            _error(h, 404, "RepoNotFound", "Repository not found")
            return None, None
        sha = repo.refs.get(rev)
        if sha is None and len(rev) >= 7:
            matches = [c for c in repo.commits if c.startswith(rev)]
            sha = matches[0] if len(matches) == 1 else None
        if sha is None:
            _error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return repo, None
        return repo, sha

    def _send_file(self, h: BaseHTTPRequestHandler, method: str, f: _File, name: str, headers: dict[str, str]) -> None:
        start, end = 0, f.size - 1
        status = 200
        if (rng := h.headers.get("range")) and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
            start = int(m.group(1))
            end = min(int(m.group(2)), f.size - 1) if m.group(2) else f.size - 1
            status = 206
            headers = headers | {"Content-Range": f"bytes {start}-{end}/{f.size}"}
        h.send_response(status)
        for k, v in (headers | {"Content-Length": str(end - start + 1), "Accept-Ranges": "bytes"}).items():
            h.send_header(k, v)
        h.end_headers()
        if method == "HEAD":
            return
        drop_at = self._drop_point(name, start, end)
        if isinstance(f.content, Path) and drop_at is None and self.slow_bps is None:
            return _sendfile(h, f.content, start, end + 1 - start)  # the bench: keep the server out of the way
        chunk = _CHUNK if self.slow_bps is None else max(1024, self.slow_bps // 20)
        offset = start
        while offset <= end:
            n = min(chunk, end + 1 - offset)
            if drop_at is not None:
                n = min(n, drop_at - offset)
                if n <= 0:
                    h.wfile.flush()
                    h.connection.shutdown(socket.SHUT_RDWR)
                    h.close_connection = True
                    return
            try:
                h.wfile.write(f.read(offset, n))
            except OSError:
                h.close_connection = True
                return
            offset += n
            if self.slow_bps:
                time.sleep(n / self.slow_bps)

    def _drop_point(self, name: str, start: int, end: int) -> int | None:
        """Where this body is cut: ``drop_at`` (or its start, if it starts past it); None if it is not cut.

        Only a body that really is cut counts as one of the ``drop_times``: a range request that ends
        before ``drop_at`` (hf_transfer's chunks) is served whole.
        """
        if self.drop_at is None or not fnmatchcase(name, self.drop_files) or self.drop_at > end:
            return None
        with self._lock:
            done = self._drops.get(name, 0)
            if self.drop_times >= 0 and done >= self.drop_times:
                return None
            self._drops[name] = done + 1
        return max(self.drop_at, start)


def _sendfile(h: BaseHTTPRequestHandler, path: Path, offset: int, count: int) -> None:
    h.wfile.flush()
    with path.open("rb") as f:
        try:
            while count > 0:
                sent = os.sendfile(h.connection.fileno(), f.fileno(), offset, count)
                if sent == 0:
                    break
                offset, count = offset + sent, count - sent
        except OSError:
            h.close_connection = True


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            hub._handle(self, "GET")

        def do_HEAD(self) -> None:
            hub._handle(self, "HEAD")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _json(h: BaseHTTPRequestHandler, payload: object) -> None:
    body = json.dumps(payload).encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def _error(
    h: BaseHTTPRequestHandler,
    status: int,
    code: str | None,
    message: str,
    *,
    body: str | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    data = json.dumps({"error": body or message}).encode()
    h.send_response(status)
    if code:
        h.send_header("X-Error-Code", code)
    h.send_header("X-Error-Message", message)
    for k, v in (extra or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)


def _lfs(f: _File) -> dict[str, Any]:
    return {"sha256": f.sha256, "oid": f.sha256, "size": f.size, "pointerSize": 134}


def _info(repo_id: str, repo: FakeRepo, sha: str, *, blobs: bool) -> dict[str, Any]:
    siblings = []
    for name, f in sorted(repo.commits[sha].items()):
        sibling: dict[str, Any] = {"rfilename": name}
        if blobs:
            sibling |= {"blobId": f.blob, "size": f.size}
            if f.lfs:
                sibling["lfs"] = _lfs(f)
        siblings.append(sibling)
    return {
        "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
        "id": repo_id,
        "modelId": repo_id,
        "sha": sha,
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "disabled": False,
        "tags": [],
        "lastModified": "2025-01-01T00:00:00.000Z",
        "siblings": siblings,
    }


def _tree(files: dict[str, _File]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    dirs = sorted({"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)})
    entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs]
    for name, f in sorted(files.items()):
        entry: dict[str, Any] = {"type": "file", "oid": f.blob, "size": f.size, "path": name}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        entries.append(entry)
    return entries


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """A started fake hub, with ``HF_ENDPOINT`` pointing at it and no ambient token or HF home."""
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield hub
