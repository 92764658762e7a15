"""
Downloading files, resumably and verified, with nothing but the standard library.

Model weights (~0.5-6 GB) and raw datasets come from the Hugging Face hub and from GitHub. A
download here is:
  - cached:    a finished file is never fetched again (`download` returns at once if `dest` exists);
  - resumable: bytes go to `dest + ".partial"`; a later run asks the server for the rest with
               `Range: bytes=N-` (206 -> append; 200 -> the server ignores ranges, start over);
  - verified:  the byte count must match Content-Length / Content-Range, and the sha256 must match
               `Expect.sha256` and, for hub URLs, the hub's ETag (for LFS files the hub's ETag /
               X-Linked-Etag IS the file's sha256). A mismatch deletes the partial and raises;
  - atomic:    `.partial` becomes `dest` (os.replace) only after verification, so a `dest` that
               exists is complete;
  - locked:    concurrent callers of the same `dest` (say 8 torchrun ranks) download it once;
  - honest offline: no network -> `DownloadError` saying which URL to fetch by hand and where to
               save it.

Environment variables (read at call time, so tests can point them at 127.0.0.1):
  NANODFT_CACHE            cache root                    (default ~/.cache/nanodft)
  NANODFT_HF_BASE          model/dataset hub base URL    (default https://huggingface.co)
  NANODFT_GITHUB_RAW_BASE  raw GitHub file base URL      (default https://raw.githubusercontent.com)

    URL=https://huggingface.co/openai-community/gpt2/resolve/main/config.json
    python -m data.download $URL out/config.json
    python -c "from data.download import *; download('$URL', cache_dir('gpt2') + '/config.json')"
    python -m pytest -q tests/test_download.py
"""
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from common import ArgumentParser, Progress, atomic_path, run_main

DEFAULT_CACHE = os.path.join("~", ".cache", "nanodft")
DEFAULT_HF_BASE = "https://huggingface.co"
DEFAULT_GITHUB_RAW_BASE = "https://raw.githubusercontent.com"
USER_AGENT = "nanoDFT-download/1.0 (python-urllib)"
CHUNK = 1 << 20  # 1 MiB per read: large enough to be fast, small enough for a lively progress line
RETRY_WAIT = 1.0  # seconds before the first automatic retry (doubles each time); tests set it to 0
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(OSError):
    """A file could not be fetched or failed verification. The message says what to do next."""


class _Retry(Exception):
    """Internal: this attempt failed in a way another attempt may fix (a cut connection, a
    timeout, HTTP 5xx)."""


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the downloaded file must be; a file that is not raises DownloadError and is not kept.

    size / sha256: checked when given.
    verify: a function(path) that raises ValueError when the downloaded bytes are not the expected
      kind of file (a JSON that does not parse, a truncated safetensors file, a dataset with missing
      rows); it runs before the file is cached, so a wrong file is never kept as complete.
    trust_etag: treat a 64-hex ETag as the file's sha256. None (the default): only for URLs under
      the hub base (the hub guarantees it for LFS files; another server's 64-hex ETag may be any
      hash).
    """

    size: int | None = None
    sha256: str | None = None
    verify: Callable[[str], object] | None = None
    trust_etag: bool | None = None


@dataclasses.dataclass(frozen=True)
class Fetch:
    """How to fetch: timeout (seconds) for connecting and for each read; retries: how many more
    attempts after a cut connection / timeout / HTTP 5xx, each resuming; quiet: no progress line and
    no notes on stderr."""

    timeout: float = 30.0
    retries: int = 3
    quiet: bool = False


# ----------------------------------------------------------------------------- locations


def cache_dir(*parts: str) -> str:
    """$NANODFT_CACHE/parts... (default ~/.cache/nanodft/parts...), created if missing."""
    root = os.path.expanduser(os.environ.get("NANODFT_CACHE") or DEFAULT_CACHE)
    path = os.path.join(root, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def hf_base() -> str:
    return (os.environ.get("NANODFT_HF_BASE") or DEFAULT_HF_BASE).rstrip("/")


def github_raw_base() -> str:
    return (os.environ.get("NANODFT_GITHUB_RAW_BASE") or DEFAULT_GITHUB_RAW_BASE).rstrip("/")


def hf_url(repo_type: str, repo: str, path: str, revision: str = "main") -> str:
    """URL of one file on the hub: {base}/{repo}/resolve/{rev}/{path} for models,
    {base}/datasets/{repo}/resolve/{rev}/{path} for datasets."""
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type must be 'model' or 'dataset', got {repo_type!r}")
    prefix = "" if repo_type == "model" else "datasets/"
    rev = urllib.parse.quote(revision, safe="")  # a revision like "refs/pr/1" is one path segment
    return f"{hf_base()}/{prefix}{repo}/resolve/{rev}/{urllib.parse.quote(path)}"


def github_raw_url(repo: str, ref: str, path: str) -> str:
    """URL of one file in a GitHub repository: {base}/{owner}/{name}/{ref}/{path}."""
    return f"{github_raw_base()}/{repo}/{ref}/{urllib.parse.quote(path)}"


# ----------------------------------------------------------------------------- progress


# ----------------------------------------------------------------------------- integrity


def _etag_sha256(value):
    """The sha256 hex an ETag stands for, or None. Accepts 'abc..', '"abc.."' and 'W/"abc.."'."""
    if not value:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"').lower()
    return v if _SHA256_RE.match(v) else None  # a 40-hex git sha1 (non-LFS hub files) is not one


def _sha256_from_headers(chain, trust_etag: bool):
    """The sha256 the server vouches for, from the headers of each response in the redirect chain.

    The hub answers a resolve URL of an LFS file with a redirect that carries `X-Linked-Etag:
    "<sha256>"` (and `ETag`), then a CDN serves the bytes with an ETag of its own (often an md5 or a
    storage hash, sometimes 64 hex but NOT the file's sha256). So: X-Linked-Etag from any response,
    else the ETag of the FIRST response (the hub's own answer to our URL), never the CDN's.
    """
    for headers in chain:
        sha = _etag_sha256(headers.get("X-Linked-Etag"))
        if sha:
            return sha
    return _etag_sha256(chain[0].get("ETag")) if trust_etag else None


def _hash_file_into(h, path: str):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)


# ----------------------------------------------------------------------------- one attempt


class _RecordingRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib's default, remembering each redirect response's headers."""

    def __init__(self):
        self.chain = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.chain.append(headers)
        # urllib keeps our Range header on the new request, so a resume works through the CDN too
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _by_hand(url, dest):
    return f"download {url} by hand and save it as {dest}"


def _content_range(value):
    """'bytes 100-999/1000' -> (100, 1000); total None when '*'. None if unparsable."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    if not m:
        return None
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))


def _remove(path):
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _open(url, dest, partial, start, timeout):
    """Send the request (asking for the bytes from `start` on); -> (response, the redirect chain's
    headers). Failures another attempt may fix raise _Retry; the others DownloadError, saying what
    to do."""
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    redirects = _RecordingRedirectHandler()
    opener = urllib.request.build_opener(redirects)
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:  # (an HTTPError is also a URLError: test it first)
        e.close()
        if e.code == 416 and start:  # our partial is no prefix of the server's file (it changed?)
            _remove(partial)
            raise _Retry("server refused to resume (HTTP 416); starting over") from None
        if e.code >= 500 or e.code == 429:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        hint = " (the file may be gated or the name wrong)" if e.code in (401, 403) else ""
        raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}{hint}; "
                            f"check the name, or {_by_hand(url, dest)}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise _Retry(f"timed out: {e.reason}") from None
        raise DownloadError(f"could not reach the server for {url} ({e.reason}); if this machine "
                            f"is offline, {_by_hand(url, dest)} (or point NANODFT_HF_BASE / "
                            "NANODFT_GITHUB_RAW_BASE at a mirror)") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from None
    return resp, redirects.chain + [resp.headers]


def _agreed_size(url, partial, total, chain, expected_size):
    """The file size that the response (total), the redirect chain's X-Linked-Size and the caller
    agree on, None if none of them says; disagreement removes the partial and raises."""
    sizes = {"Content-Length/Content-Range": total, "expected_size": expected_size}
    linked = next((h.get("X-Linked-Size") for h in chain if h.get("X-Linked-Size")), None)
    if linked and linked.isdigit():
        sizes["X-Linked-Size"] = int(linked)
    known = {k: v for k, v in sizes.items() if v is not None}
    if len(set(known.values())) > 1:
        _remove(partial)
        raise DownloadError(f"size mismatch for {url}: {known}; the partial file was removed; "
                            "the file on the server is not the expected one")
    return next(iter(known.values()), None)


def _attempt(url, dest, partial, desc, expect: Expect, fetch: Fetch):
    """One HTTP request: fetch what is missing into `partial`, verify, rename to `dest`.
    expect.trust_etag is already resolved to a bool (download does it)."""
    start = os.path.getsize(partial) if os.path.exists(partial) else 0
    resp, chain = _open(url, dest, partial, start, fetch.timeout)
    with resp:
        if resp.status == 206:
            content_range = resp.headers.get("Content-Range")
            cr = _content_range(content_range)
            if cr is None or cr[0] != start:  # the server resumed somewhere else: do not append
                _remove(partial)
                raise _Retry(f"server answered the resume with Content-Range {content_range!r}")
            total, mode = cr[1], "ab"
        else:
            if start and not fetch.quiet:
                print(f"{desc}: the server does not support resuming; starting over",
                      file=sys.stderr)
            start, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        total = _agreed_size(url, partial, total, chain, expect.size)
        wanted = {}  # where a sha256 came from -> the sha256
        if expect.sha256:
            wanted["expected_sha256"] = expect.sha256.strip().lower()
        served = _sha256_from_headers(chain, expect.trust_etag)
        if served:
            wanted["the server's ETag"] = served

        h = hashlib.sha256()
        if start:  # the hash must cover the bytes a previous run already wrote
            _hash_file_into(h, partial)
        done = start
        progress = Progress(desc, total, "B", on=not fetch.quiet, initial=start)
        try:
            with open(partial, mode) as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    # reset, timeout, IncompleteRead
                    except (OSError, http.client.HTTPException) as e:
                        raise _Retry(f"interrupted after {done} bytes: "
                                     f"{type(e).__name__}: {e}") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    progress.update(done)
        finally:
            progress.close()

    # NOTE: http.client returns b"" (no exception) when a connection closes before Content-Length
    # bytes arrived, so a short file is only caught by comparing counts.
    if total is not None and done < total:
        raise _Retry(f"connection closed after {done} of {total} bytes")
    if total is not None and done > total:
        _remove(partial)
        raise DownloadError(f"got {done} bytes for {url} but the server announced {total}; "
                            "the partial file was removed, run again")
    got = h.hexdigest()
    for source, want in wanted.items():
        if got != want:
            _remove(partial)
            raise DownloadError(f"sha256 mismatch for {url}: got {got}, expected {want} "
                                f"(from {source}); the partial file was removed, run again")
    # what the content itself can tell, for servers that send no sha256
    if expect.verify is not None:
        try:
            expect.verify(partial)
        except ValueError as e:
            _remove(partial)
            raise DownloadError(f"{url} did not give the expected file ({e}); nothing was cached "
                                f"as {dest}; check the server, or {_by_hand(url, dest)}") from None
    os.replace(partial, dest)  # atomic: dest appears only complete and verified


# ----------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _locked(lock_path: str, desc: str, quiet: bool):
    """An exclusive lock on lock_path (flock; released by the OS if the holder dies).

    Without it, torchrun's ranks would all append to the same .partial at once. The holder deletes
    the lock file when done; a waiter that then gets the lock on the deleted file retries on a fresh
    one (the samestat check), so two processes never both hold it. No fcntl (Windows): no lock.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"{desc}: waiting for another process downloading it ({lock_path})",
                      file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock_path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        _remove(lock_path)
        os.close(fd)  # closing releases the flock


# ----------------------------------------------------------------------------- the API


def download(url: str, dest, *, desc: str | None = None, expect: Expect | None = None,
             fetch: Fetch | None = None) -> str:
    """Fetch url into dest (unless dest already exists) and return dest.

    desc: the name on the progress line and in notes (default: dest's file name).
    expect: what the file must be (size, sha256, a verify function, whether to trust the ETag);
      default Expect(): nothing beyond what the server vouches for.
    fetch: timeout, retries, quiet; default Fetch().
    Raises DownloadError with what to do (e.g. which file to download by hand, and where to put it).
    """
    expect = expect or Expect()
    fetch = fetch or Fetch()
    dest = os.fspath(dest)
    desc = desc or os.path.basename(dest)
    if os.path.exists(dest):
        if expect.size is None or os.path.getsize(dest) == expect.size:
            return dest
        if not fetch.quiet:
            print(f"{dest}: {os.path.getsize(dest)} bytes, expected {expect.size}; "
                  "downloading again", file=sys.stderr)
        os.remove(dest)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    if expect.trust_etag is None:
        expect = dataclasses.replace(expect, trust_etag=url.startswith(hf_base() + "/"))
    partial = dest + ".partial"
    with _locked(dest + ".lock", desc, fetch.quiet):
        if os.path.exists(dest):  # another process finished it while we waited for the lock
            return dest
        for attempt in range(fetch.retries + 1):
            try:
                _attempt(url, dest, partial, desc, expect, fetch)
                return dest
            except _Retry as e:
                if attempt == fetch.retries:
                    if os.path.exists(partial):
                        kept = (f"the partial file {partial} ({os.path.getsize(partial)} bytes) "
                                "was kept, run again to resume")
                    else:
                        kept = "run again"
                    raise DownloadError(f"download of {url} failed: {e}; {kept}; "
                                        f"if it keeps failing, {_by_hand(url, dest)}") from None
                wait = RETRY_WAIT * 2 ** attempt
                if not fetch.quiet:
                    print(f"{desc}: {e}; retrying in {wait:.0f}s "
                          f"({attempt + 1}/{fetch.retries})", file=sys.stderr)
                time.sleep(wait)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------- helpers for the converters


def write_jsonl_atomic(path: str, records) -> int:
    """Write dicts as JSONL to path atomically (no half-written file). Returns the count."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def main(argv=None):
    p = ArgumentParser(description="Download one file (resumable, verified, atomic).")
    p.add_argument("url", help="URL to fetch")
    p.add_argument("dest", help="where to save it (a .partial file is used until it is complete)")
    p.add_argument("--size", type=int, default=None,
                   help="expected size in bytes (default: not checked)")
    p.add_argument("--sha256", default=None,
                   help="expected sha256 hex digest (default: not checked)")
    p.add_argument("--retries", type=int, default=3,
                   help="automatic resumes after a cut connection")
    args = p.parse_args(argv)
    print(download(args.url, args.dest, expect=Expect(size=args.size, sha256=args.sha256),
                   fetch=Fetch(retries=args.retries)))


if __name__ == "__main__":
    run_main(main)
