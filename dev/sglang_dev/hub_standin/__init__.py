"""A local stand-in for the Hugging Face Hub's HTTP layout, so the real `huggingface_hub` download path runs
here.

Point a process at it with `HF_ENDPOINT=http://127.0.0.1:<port>`. It serves what the `huggingface_hub` client
(2.4, the version the project installs) asks for:

- `GET /api/models/<repo>[/revision/<rev>]` (`repo_info`/`model_info`, `?blobs=true` adds sizes and LFS data);
- `GET /api/models/<repo>/tree/<rev>` (`list_repo_tree`, which `snapshot_download` uses);
- `HEAD|GET /<repo>/resolve/<rev>/<file>`: small files answer 200 with `ETag` (the git blob id),
  `X-Repo-Commit` and `Content-Length`; large ("LFS") files answer 302 to a second port, the "CDN", with
  `X-Linked-Etag` (sha256), `X-Linked-Size` and `X-Repo-Commit`, as the Hub does: the client does not follow a
  redirect to another origin on HEAD and reads the file's metadata from the 302 itself;
- on the CDN port, `GET /cdn/<sha256>` with `Range: bytes=N-` (206, `Content-Range`) for resumed downloads.

Errors carry the Hub's `X-Error-Code` headers, so the client raises its own typed errors: a repository that
does not exist answers 401 `RepoNotFound` without a token (404 with one), a revision that does not exist 404
`RevisionNotFound`, a gated repository's files 401 `GatedRepo` without a token and 403 with a wrong one.

Bodies are optionally throttled (bytes per second per response, changeable while running through
`POST /_standin/rate`), so a download takes long enough to watch. `GET /_standin/requests` lists every file
body served (repository, file, first byte, bytes sent, whether it completed): tests read it to prove a
restarted download resumed with a Range request instead of starting over.

Development tooling only: the operator and the engine do not know it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

# Files the Hub stores in LFS (served through the CDN redirect): weights, and anything large.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx")
LFS_MIN_BYTES = 10 * 1024
STANDIN_ORG = "sglang-operator"
TINY_REPO = f"{STANDIN_ORG}/tiny"
TINY_GATED_REPO = f"{STANDIN_ORG}/tiny-gated"
DEFAULT_TOKEN = "hf_standin_token"
DEFAULT_LORA_SEEDS = (1, 2)
CHUNK_BYTES = 64 * 1024
PADDING_FILE = "padding.bin"
PADDING_SEED = 20260101
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def tiny_lora_repo(seed: int) -> str:
    return f"{STANDIN_ORG}/tiny-lora-{seed}"


@dataclass(frozen=True)
class HubFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES) or len(self.data) >= LFS_MIN_BYTES

    @cached_property
    def blob_id(self) -> str:
        """git's blob id, the ETag the Hub gives a file stored in git."""
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def pointer(self) -> HubFile:
        """The LFS pointer file git stores instead of the content (its blob id is the LFS file's ETag)."""
        return HubFile(self.path, (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                                   f"size {len(self.data)}\n").encode())


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    files: tuple[HubFile, ...]
    gated: bool = False

    @cached_property
    def commit(self) -> str:
        """A commit id derived from the content: the same files give the same id on every run."""
        digest = hashlib.sha1(self.repo_id.encode())
        for f in sorted(self.files, key=lambda f: f.path):
            digest.update(f"{f.path}\0{f.blob_id}\0".encode())
        return digest.hexdigest()

    def resolve(self, revision: str) -> str | None:
        """The commit a revision names: `main` or the commit itself; else None."""
        return self.commit if revision in ("main", self.commit) else None

    def file(self, path: str) -> HubFile | None:
        return next((f for f in self.files if f.path == path), None)


def repo_from_folder(repo_id: str, folder: Path, *, gated: bool = False) -> HubRepo:
    files = tuple(HubFile(p.relative_to(folder).as_posix(), p.read_bytes())
                  for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith("."))
    return HubRepo(repo_id, files, gated=gated)


def padding_file(megabytes: float) -> HubFile:
    """Deterministic filler bytes the loaders ignore (`*.bin` beside `*.safetensors`): the tiny model is
    0.6 MB, and the client writes (so reports progress and can resume) 10 MB at a time, so a download worth
    watching needs more bytes than the model has."""
    return HubFile(PADDING_FILE, random.Random(PADDING_SEED).randbytes(int(megabytes * 1024 * 1024)))


def tiny_repos(cache_dir: Path, lora_seeds: tuple[int, ...] = DEFAULT_LORA_SEEDS,
               pad_mb: float = 0) -> list[HubRepo]:
    """The tiny model (public and gated copies, with `pad_mb` of padding) and its seeded adapters, built by
    the engine's own builder."""
    from sglang_engine.tiny import ensure_tiny_lora, ensure_tiny_model

    model = ensure_tiny_model(cache_dir)
    extra = (padding_file(pad_mb),) if pad_mb > 0 else ()
    repos = [HubRepo(TINY_REPO, repo_from_folder(TINY_REPO, model).files + extra),
             HubRepo(TINY_GATED_REPO, repo_from_folder(TINY_REPO, model).files + extra, gated=True)]
    repos += [repo_from_folder(tiny_lora_repo(seed), ensure_tiny_lora(cache_dir, seed, model))
              for seed in lora_seeds]
    return repos


@dataclass
class Served:
    """One file body served (for tests: did a restarted download resume?)."""

    repo: str
    path: str
    start: int
    size: int
    sent: int = 0
    complete: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "path": self.path, "start": self.start, "size": self.size,
                "sent": self.sent, "complete": self.complete}


def _hub_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status,
                             headers={"X-Error-Code": code, "X-Error-Message": message})


@dataclass
class HubStandIn:
    repos: list[HubRepo]
    rate: float | None = None  # bytes per second per response body; None: as fast as it goes
    token: str = DEFAULT_TOKEN
    cdn_base: str = ""  # set once the CDN port is known
    served: list[Served] = field(default_factory=list)
    # (repo, path) whose next body is served with one byte flipped (a checksum failure to detect), once
    corrupt_once: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._by_id = {r.repo_id: r for r in self.repos}
        self._by_sha = {f.sha256: (r, f) for r in self.repos for f in r.files if f.lfs}

    # ----------------------------------------------------------------------------------------- routing
    def hub_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_standin/requests", self.requests_page)
        app.router.add_post("/_standin/rate", self.set_rate)
        app.router.add_get("/api/models/{rest:.+}", self.api_models)
        app.router.add_get("/{rest:.+}", self.resolve)  # and HEAD
        return app

    def cdn_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cdn/{sha256}", self.cdn)
        return app

    def _repo_or_error(self, request: web.Request, repo_id: str) -> HubRepo | web.Response:
        repo = self._by_id.get(repo_id)
        if repo is None:
            # The Hub cannot tell "missing" from "private" without a token: 401; with one, 404.
            authed = "Authorization" in request.headers
            return _hub_error(404 if authed else 401, "RepoNotFound", "Repository not found")
        return repo

    def _gate(self, request: web.Request, repo: HubRepo) -> web.Response | None:
        if not repo.gated:
            return None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given == self.token:
            return None
        message = (f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                   "authenticated to access it. Please log in.")
        return _hub_error(403 if given else 401, "GatedRepo", message)

    # ----------------------------------------------------------------------------------------- API
    async def api_models(self, request: web.Request) -> web.Response:
        rest = request.match_info["rest"]
        repo_id, revision, tree = rest, "main", False
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                repo_id, _, revision = rest.partition(marker)
                tree = marker == "/tree/"
                break
        found = self._repo_or_error(request, repo_id)
        if isinstance(found, web.Response):
            return found
        commit = found.resolve(revision.split("/")[0])
        if commit is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if tree:
            return web.json_response([self._tree_entry(f) for f in found.files])
        blobs = request.query.get("blobs", "").lower() == "true"
        return web.json_response({
            "_id": commit[:24], "id": found.repo_id, "modelId": found.repo_id, "sha": commit,
            "author": found.repo_id.split("/")[0], "private": False,
            "gated": "manual" if found.gated else False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": ["safetensors"], "library_name": "transformers",
            "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [self._sibling(f, blobs) for f in found.files],
        })

    @staticmethod
    def _sibling(f: HubFile, blobs: bool) -> dict[str, Any]:
        if not blobs:
            return {"rfilename": f.path}
        out: dict[str, Any] = {"rfilename": f.path, "size": len(f.data),
                               "blobId": f.pointer.blob_id if f.lfs else f.blob_id}
        if f.lfs:
            out["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer.data)}
        return out

    @staticmethod
    def _tree_entry(f: HubFile) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": f.path, "size": len(f.data),
                               "oid": f.pointer.blob_id if f.lfs else f.blob_id}
        if f.lfs:
            out["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer.data)}
        return out

    # ----------------------------------------------------------------------------------------- files
    async def resolve(self, request: web.Request) -> web.StreamResponse:
        repo_id, sep, tail = request.match_info["rest"].partition("/resolve/")
        revision, _, path = tail.partition("/")
        if not sep or not path:
            return _hub_error(404, "EntryNotFound", f"no route for {request.path}")
        found = self._repo_or_error(request, repo_id)
        if isinstance(found, web.Response):
            return found
        commit = found.resolve(revision)
        if commit is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        refused = self._gate(request, found)
        if refused is not None:
            return refused
        hub_file = found.file(path)
        if hub_file is None:
            return _hub_error(404, "EntryNotFound", f"{path} does not exist on {revision}")
        if hub_file.lfs:
            pointer = hub_file.pointer
            location = f"{self.cdn_base}/cdn/{hub_file.sha256}?repo={quote(repo_id)}&file={quote(path)}"
            return web.Response(status=302, headers={
                "Location": location, "X-Repo-Commit": commit, "ETag": f'"{pointer.blob_id}"',
                "X-Linked-Etag": f'"{hub_file.sha256}"', "X-Linked-Size": str(len(hub_file.data)),
                "Accept-Ranges": "bytes"})
        return await self._body(request, found.repo_id, hub_file, {
            "X-Repo-Commit": commit, "ETag": f'"{hub_file.blob_id}"'})

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        found = self._by_sha.get(request.match_info["sha256"])
        if found is None:
            return web.Response(status=404, text="no such object")
        repo, hub_file = found  # repositories may share a file: the redirect says which one was asked for
        return await self._body(request, request.query.get("repo", repo.repo_id), hub_file,
                                {"ETag": f'"{hub_file.sha256}"'})

    async def _body(self, request: web.Request, repo_id: str, hub_file: HubFile,
                    headers: dict[str, str]) -> web.StreamResponse:
        """The file, or the part a `Range: bytes=N-[M]` asks for (206), at the configured rate."""
        data, total = hub_file.data, len(hub_file.data)
        start, end, status = 0, total - 1, 200
        wanted = _RANGE.match(request.headers.get("Range", ""))
        if wanted:
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)), total - 1) if wanted.group(2) else total - 1
            if start >= total:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{total}"}
        response = web.StreamResponse(status=status, headers={
            **headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        response.content_length = end - start + 1
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        record = Served(repo_id, hub_file.path, start, total)
        self.served.append(record)
        if (repo_id, hub_file.path) in self.corrupt_once:
            self.corrupt_once.discard((repo_id, hub_file.path))
            data = data[:end] + bytes([data[end] ^ 0xFF]) + data[end + 1:]
        began, position = time.monotonic(), start
        while position <= end:
            rate = self.rate
            step = int(max(1024, rate / 20)) if rate else CHUNK_BYTES  # 20 writes a second when throttled
            chunk = data[position:min(end + 1, position + step)]
            await response.write(chunk)
            position += len(chunk)
            record.sent += len(chunk)
            if rate:
                ahead = began + record.sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await response.write_eof()
        record.complete = True
        return response

    # ----------------------------------------------------------------------------------------- control
    async def requests_page(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [s.as_json() for s in self.served], "rate": self.rate})

    async def set_rate(self, request: web.Request) -> web.Response:
        body = await request.json()
        value = body.get("bytesPerSecond")
        self.rate = float(value) if value else None
        return web.json_response({"rate": self.rate})


@dataclass
class Running:
    """A started stand-in: `endpoint` is what HF_ENDPOINT must be."""

    hub: HubStandIn
    runner: web.AppRunner
    cdn_runner: web.AppRunner
    endpoint: str

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.cdn_runner.cleanup()


async def start(hub: HubStandIn, host: str = "127.0.0.1", port: int = 0, cdn_port: int = 0) -> Running:
    """Listen on `port` (the Hub) and `cdn_port` (the CDN its LFS redirects point to); 0 picks free ports."""
    cdn_runner = web.AppRunner(hub.cdn_app(), access_log=None)
    await cdn_runner.setup()
    cdn_site = web.TCPSite(cdn_runner, host, cdn_port)
    await cdn_site.start()
    hub.cdn_base = f"http://{host}:{_bound_port(cdn_runner)}"
    runner = web.AppRunner(hub.hub_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return Running(hub, runner, cdn_runner, f"http://{host}:{_bound_port(runner)}")


def _bound_port(runner: web.AppRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])


@contextlib.contextmanager
def serving_in_thread(hub: HubStandIn, host: str = "127.0.0.1") -> Iterator[str]:
    """Run the stand-in on an event loop of its own in a background thread (for blocking callers and tests
    whose loop is not the server's); yields the endpoint (HF_ENDPOINT)."""
    loop = asyncio.new_event_loop()
    started: list[Running | BaseException] = []
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started.append(loop.run_until_complete(start(hub, host)))
        except BaseException as exc:
            started.append(exc)
            return
        finally:
            ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="hub-standin", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the hub stand-in did not start within 30 s")
    if isinstance(started[0], BaseException):
        raise started[0]
    running = started[0]
    try:
        yield running.endpoint
    finally:
        asyncio.run_coroutine_threadsafe(running.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
