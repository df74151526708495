"""The engine owns the download: a Hugging Face model (or adapter) is fetched into the cache with the real
`huggingface_hub` client before the backend starts, so its progress can be watched and a restart resumes it.

`fetch_repo` (blocking; run it in a thread) lists the repository once (`repo_info(files_metadata=True)`: file
names and sizes, so the total is known before the first byte), brings each file's blob into the cache on a
few threads (`fetch_blob`: resumable across restarts, hash-checked) and links it with `hf_hub_download`, then
calls `snapshot_download`, which finds every file cached and records the revision's ref, so a later
`local_snapshot` works offline.
Bytes are observed through the client's documented `tqdm_class` hook: one bar per file, whose `update(n)`
counts bytes written (over HTTP and over Xet alike; `update_transfer` is the Xet wire count, not used). Over
HTTP the client reads and writes 10 MB at a time, so progress (and what a restart can resume from) moves in
10 MB steps per file.

`classify` turns what the client raises into a load failure reason (protocol.LOAD_FAILURES) and whether it is
permanent: a repository or revision that does not exist and a gated repository without a (valid) token wait
for a fix; a full disk too (retried slowly, space may be freed); anything else (hub down, timeouts) retries.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sglang_engine import protocol

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"  # the engine's partial blob, kept across restarts (see fetch_blob)
HASH_CHUNK_BYTES = 8 * 1024 * 1024
DOWNLOAD_WORKERS = 4  # files at once (huggingface_hub's snapshot_download uses 8)
RATE_WINDOW_S = 20.0  # the rate is measured over the last this many seconds
RATE_MIN_WINDOW_S = 3.0  # no rate (nor estimate) from less: the client reports 10 MB at a time
_SAMPLE_EVERY_S = 0.5


def is_hub_source(source: str) -> bool:
    """A Hugging Face repo id (what the engine downloads), not builtin:, pvc:// or an absolute path."""
    return not source.startswith(("builtin:", "pvc://", "/"))


class DownloadProgress:
    """Bytes and files of one repository's download: written by download threads, read by the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[str, int | None] = {}
        self._done: dict[str, int] = {}  # bytes of each file on disk (cached, resumed or received)
        self._finished: set[str] = set()
        self._samples: deque[tuple[float, int]] = deque()
        self._cancelled = False

    def cancel(self) -> None:
        """Make every download thread stop at its next chunk (what is on disk stays, for a resume)."""
        self._cancelled = True

    def plan(self, sizes: dict[str, int | None]) -> None:
        with self._lock:
            self._sizes = dict(sizes)
            self._done = {name: 0 for name in sizes}
            self._finished = set()
            self._samples.clear()

    def _advance(self, name: str, n: int) -> None:
        if self._cancelled:
            raise DownloadCancelled("the engine is stopping")
        with self._lock:
            size = self._sizes.get(name)
            value = self._done.get(name, 0) + n
            self._done[name] = min(value, size) if size is not None else value
            now = time.monotonic()
            if not self._samples or now - self._samples[-1][0] >= _SAMPLE_EVERY_S:
                self._samples.append((now, sum(self._done.values())))
                while self._samples and now - self._samples[0][0] > RATE_WINDOW_S:
                    self._samples.popleft()

    def finish(self, name: str) -> None:
        with self._lock:
            self._finished.add(name)
            size = self._sizes.get(name)
            if size is not None:
                self._done[name] = size

    def bar_class(self, name: str) -> type[QuietBar]:
        """A `tqdm_class` for `hf_hub_download` of file `name` (the client creates one bar per file)."""
        progress = self

        class FileBar(QuietBar):
            def __init__(self, *args: Any, initial: int | float = 0, **kwargs: Any) -> None:
                super().__init__(*args, initial=initial, **kwargs)
                with progress._lock:  # a resumed file starts with the bytes already on disk
                    progress._done[name] = 0
                progress._advance(name, int(initial or 0))

            def update(self, n: int | float | None = 1) -> None:
                super().update(n)
                progress._advance(name, int(n or 0))

        return FileBar

    def snapshot(self, phase: str = protocol.PHASE_DOWNLOADING, message: str = "") -> protocol.LoadProgress:
        with self._lock:
            done = sum(self._done.values())
            total = None if not self._sizes or None in self._sizes.values() else sum(
                s for s in self._sizes.values() if s is not None)
            rate = None
            samples = list(self._samples)
            now = time.monotonic()
        if samples:
            samples.append((now, done))
            first = next(s for s in samples if now - s[0] <= RATE_WINDOW_S + _SAMPLE_EVERY_S)
            if now - first[0] >= RATE_MIN_WINDOW_S:
                rate = max(0.0, (done - first[1]) / (now - first[0]))
        eta = (total - done) / rate if rate and total is not None else None
        return protocol.LoadProgress(
            phase=phase, bytes_done=done, bytes_total=total, files_done=len(self._finished),
            files_total=len(self._sizes) or None,
            bytes_per_second=round(rate, 1) if rate is not None else None,
            eta_seconds=round(eta, 1) if eta is not None else None, message=message)


class QuietBar:
    """The shape of a tqdm bar the client uses (context manager, update, close, set_postfix_str, ...),
    drawing nothing: the engine reports progress on /status and /metrics, not on a terminal."""

    def __init__(self, *args: Any, total: int | float | None = None, initial: int | float = 0,
                 **kwargs: Any) -> None:
        self.total = total
        self.n = initial or 0

    def update(self, n: int | float | None = 1) -> None:
        self.n += n or 0

    def update_transfer(self, n: int | float | None = 1) -> None:
        """Network bytes (Xet deduplicates and compresses): the bytes written to disk are what count."""

    def __enter__(self) -> QuietBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, attr: str) -> Callable[..., None]:  # close, refresh, set_postfix_str, ...
        if attr.startswith("_"):
            raise AttributeError(attr)
        return lambda *args, **kwargs: None


class DownloadCancelled(Exception):
    """Raised inside the client's download loop (from its progress bar) to stop a download early."""


class DownloadFailure(Exception):
    """A download that failed, classified: `reason` from protocol.LOAD_FAILURES."""

    def __init__(self, reason: str, message: str, permanent: bool) -> None:
        super().__init__(reason, message)
        self.reason, self.message, self.permanent = reason, message, permanent

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def classify(exc: BaseException, repo_id: str, revision: str | None) -> DownloadFailure:
    """What the client raised -> a load failure with a message that says what to fix."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, DownloadFailure):
        return exc
    if isinstance(exc, DownloadCancelled):
        return DownloadFailure(protocol.FAIL_DOWNLOAD, str(exc), False)
    if isinstance(exc, ChecksumMismatch):
        return DownloadFailure(protocol.FAIL_CHECKSUM, str(exc), False)
    if isinstance(exc, RevisionNotFoundError):  # a subclass of nothing below, checked first anyway
        return DownloadFailure(protocol.FAIL_REVISION_NOT_FOUND,
                               f"revision {revision!r} does not exist in {repo_id}", True)
    if isinstance(exc, GatedRepoError):  # a RepositoryNotFoundError subclass: before it
        return DownloadFailure(protocol.FAIL_GATED, f"{repo_id} is gated: accept its terms on the Hub and "
                               "give a token that has access (spec.hfTokenSecret)", True)
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadFailure(protocol.FAIL_REPO_NOT_FOUND, f"{repo_id} does not exist on the Hub, or is "
                               "private and needs a token (spec.hfTokenSecret)", True)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadFailure(protocol.FAIL_DISK_FULL, f"no space left for {repo_id} in the model cache: "
                               "enlarge spec.modelCache's claim or free space", True)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return DownloadFailure(protocol.FAIL_DOWNLOAD, f"{type(exc).__name__}: {text}"[:300], False)


def fetch_repo(repo_id: str, revision: str | None, cache_dir: str | None, progress: DownloadProgress,
               workers: int = DOWNLOAD_WORKERS, endpoint: str | None = None) -> Path:
    """Download every file of `repo_id` at `revision` into the HF cache; the local snapshot folder.

    Blocking: call from a thread. Raises DownloadFailure. `endpoint` defaults to HF_ENDPOINT (read by the
    client when it is imported: in-process tests pass it instead)."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download, try_to_load_from_cache

    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
        sizes = {s.rfilename: s.size for s in info.siblings or []}
        progress.plan(sizes)
        log.info("downloading %s@%s: %d files, %s bytes", repo_id, revision or "main", len(sizes),
                 sum(s or 0 for s in sizes.values()))

        def one(name: str) -> None:
            cached = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=info.sha)
            if not isinstance(cached, str):
                bar = progress.bar_class(name)
                fetch_blob(repo_id, name, str(info.sha), cache_dir, endpoint, bar)
                # The blob is in place (or the file is on Xet): the client links it into the snapshot.
                hf_hub_download(repo_id, name, revision=info.sha, cache_dir=cache_dir, endpoint=endpoint,
                                tqdm_class=bar)
            progress.finish(name)

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
        try:
            for future in as_completed([pool.submit(one, name) for name in sizes]):
                future.result()
        except BaseException:
            progress.cancel()  # the other files stop at their next chunk: this attempt failed
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # Every file is cached now: this lists the repository again, downloads nothing and writes the
        # revision's ref (what `local_snapshot` reads).
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                                      tqdm_class=QuietBar))
    except Exception as exc:
        raise classify(exc, repo_id, revision) from exc


def fetch_blob(repo_id: str, name: str, commit: str, cache_dir: str | None, endpoint: str | None,
               bar: type[QuietBar]) -> None:
    """Bring file `name`'s blob into the cache over HTTP, resuming `<blob>.part` left by an earlier attempt.

    huggingface_hub 2.x downloads into a temporary file unique to the process and deletes it on failure (so
    that processes sharing a cache on a file system with unreliable locks never write into one file), so a
    restarted engine would start every file over. The engine keeps its own partial file instead, locked with
    flock while it grows, checks the finished blob against the Hub's hash (the sha256 of an LFS file, the git
    blob id of another) and renames it into place, where `hf_hub_download` finds and links it. Files the Hub
    serves over Xet are left to the client (Xet's chunk cache keeps what a stopped download fetched)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo_id, name, revision=commit, endpoint=endpoint)
    meta = get_hf_file_metadata(url)
    if meta.xet_file_data is not None or not meta.etag:
        return
    blob = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") \
        / "blobs" / meta.etag
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    part = blob.with_name(blob.name + PART_SUFFIX)
    headers = build_hf_headers()
    if urlsplit(meta.location).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)  # a CDN's signed URL: the token stays with the Hub
    with part.open("ab") as out:
        fcntl.flock(out, fcntl.LOCK_EX)  # another engine on a shared cache finishes first
        if blob.exists():
            return
        out.seek(0, os.SEEK_END)
        http_get(meta.location, out, resume_size=out.tell(), headers=headers, expected_size=meta.size,
                 displayed_filename=name, tqdm_class=bar)
        out.flush()
        if not matches_etag(part, meta.etag):
            part.unlink()
            raise ChecksumMismatch(f"{name}: the downloaded bytes do not match the Hub's hash {meta.etag}; "
                                   "downloading it again")
        os.replace(part, blob)


class ChecksumMismatch(Exception):
    """A downloaded file's bytes do not hash to what the Hub says (it is deleted and downloaded again)."""


def matches_etag(path: Path, etag: str) -> bool:
    """The Hub's ETag of a file is the sha256 of its content (LFS) or its git blob id (sha1); other forms
    are not checked."""
    if len(etag) == 64:
        digest = hashlib.sha256()
    elif len(etag) == 40:
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    else:
        return True
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest() == etag


def local_snapshot(repo_id: str, revision: str | None, cache_dir: str | None) -> Path | None:
    """The cached snapshot of a repository fetched before, without any network; None when not cached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, IncompleteSnapshotError, ...
        return None
