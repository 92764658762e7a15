"""
Tests for data/download.py against the local HTTP server of conftest.py (no internet).

    python -m pytest -q tests/test_download.py
"""
import hashlib
import os
import random
import socket
import subprocess
import sys
import threading

import pytest

from data import download as dl
from data.download import DownloadError, Expect, Fetch, cache_dir, download, hf_url

DATA = random.Random(0).randbytes(300_000)  # random bytes: a misplaced byte cannot go unnoticed
SHA = hashlib.sha256(DATA).hexdigest()
QUIET = Fetch(quiet=True)


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path, local_server):
    # the local server plays the hub, so its ETags are trusted like the hub's; retries do not sleep
    monkeypatch.setenv("NANODFT_HF_BASE", local_server.url)
    monkeypatch.setenv("NANODFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dl, "RETRY_WAIT", 0.0)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_download_success_creates_dirs_and_reports_progress(local_server, tmp_path, capsys):
    url = local_server.add("openai-community/gpt2/resolve/main/model.safetensors", DATA, etag=True)
    dest = tmp_path / "a" / "b" / "model.safetensors"
    assert download(url, dest) == str(dest)
    assert read(dest) == DATA
    assert sorted(os.listdir(dest.parent)) == ["model.safetensors"]  # no .partial, no .lock left
    err = capsys.readouterr().err
    assert "model.safetensors: 0.3 MB/0.3 MB" in err and "model.safetensors: 0.3 MB in" in err and err.endswith("\n")


def test_resume_after_cut_connection(local_server, tmp_path):
    url = local_server.add("f.bin", DATA, etag=True, cut_after=100_000)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="run again to resume"):
        download(url, dest, fetch=Fetch(retries=0, quiet=True))
    assert not dest.exists()
    assert read(str(dest) + ".partial") == DATA[:100_000]
    download(url, dest, fetch=QUIET)
    assert read(dest) == DATA and not os.path.exists(str(dest) + ".partial")
    gets = local_server.gets()
    assert len(gets) == 2 and "Range" not in gets[0]["headers"]
    assert gets[1]["headers"]["Range"] == "bytes=100000-"


def test_resume_within_one_call(local_server, tmp_path):
    url = local_server.add("f.bin", DATA, etag=True, cut_after=123_456, cut_times=2)
    dest = tmp_path / "f.bin"
    download(url, dest, fetch=Fetch(retries=2, quiet=True))
    assert read(dest) == DATA
    ranges = [r["headers"].get("Range") for r in local_server.gets()]
    assert ranges == [None, "bytes=123456-", "bytes=246912-"]


def test_server_without_range_support_restarts_from_zero(local_server, tmp_path):
    url = local_server.add("f.bin", DATA, etag=True, ranges=False)
    dest = tmp_path / "f.bin"
    stale = b"stale bytes that must not end up in the file"
    with open(str(dest) + ".partial", "wb") as f:
        f.write(stale)
    download(url, dest, fetch=QUIET)
    assert read(dest) == DATA
    assert local_server.gets()[0]["headers"]["Range"] == f"bytes={len(stale)}-"


def test_corrupted_file_rejected_by_etag(local_server, tmp_path):
    url = local_server.add("f.bin", DATA, etag=True, corrupt=True)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as e:
        download(url, dest, fetch=QUIET)
    msg = str(e.value)
    assert f"sha256 mismatch for {url}: got " in msg and f"expected {SHA}" in msg
    assert "the partial file was removed, run again" in msg
    assert os.listdir(tmp_path) == []  # neither dest nor .partial


def test_corrupted_file_rejected_after_resume(local_server, tmp_path):
    # the hash must cover the bytes written by the first attempt too
    url = local_server.add("f.bin", DATA, etag=True, cut_after=200_000)
    dest = tmp_path / "f.bin"
    with open(str(dest) + ".partial", "wb") as f:
        f.write(b"X" * 10)  # a wrong prefix from an earlier run
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(url, dest, fetch=Fetch(retries=1, quiet=True))
    assert not dest.exists() and not os.path.exists(str(dest) + ".partial")


def test_expected_sha256_and_size(local_server, tmp_path):
    url = local_server.add("plain.bin", DATA)  # no ETag: only the caller's values can catch a bad file
    with pytest.raises(DownloadError, match="sha256 mismatch.*from expected_sha256"):
        download(url, tmp_path / "x", expect=Expect(sha256="0" * 64), fetch=QUIET)
    with pytest.raises(DownloadError, match="size mismatch"):
        download(url, tmp_path / "y", expect=Expect(size=len(DATA) + 1), fetch=QUIET)
    assert os.listdir(tmp_path) == []
    download(url, tmp_path / "z", expect=Expect(size=len(DATA), sha256=SHA.upper()), fetch=QUIET)
    assert read(tmp_path / "z") == DATA


def test_hub_redirect_uses_x_linked_etag_not_cdn_etag(local_server, tmp_path):
    # like the hub: resolve URL -> 302 with X-Linked-Etag (the sha256) -> CDN, whose own ETag is
    # 64 hex but not the file's sha256 and must be ignored
    local_server.add("cdn/good", DATA, etag='"' + "ab" * 32 + '"')
    local_server.add("cdn/bad", DATA, corrupt=True)
    linked = {"X-Linked-Etag": f'"{SHA}"', "X-Linked-Size": str(len(DATA))}
    good = local_server.redirect("m/resolve/main/good", "cdn/good", linked)
    bad = local_server.redirect("m/resolve/main/bad", "cdn/bad", linked)
    download(good, tmp_path / "good", fetch=QUIET)
    assert read(tmp_path / "good") == DATA
    # a redirect carrying only ETag (the hub's own answer): that one counts, the CDN's does not
    plain = local_server.redirect("m/resolve/main/plain", "cdn/good", {"ETag": f'"{SHA}"'})
    download(plain, tmp_path / "plain", fetch=QUIET)
    assert read(tmp_path / "plain") == DATA
    with pytest.raises(DownloadError, match=f"expected {SHA}"):
        download(bad, tmp_path / "bad", fetch=QUIET)


def test_etag_trusted_only_from_the_hub(local_server, tmp_path, monkeypatch):
    # a 64-hex ETag from a server other than the hub may be any hash (not the file's sha256)
    monkeypatch.setenv("NANODFT_HF_BASE", "https://hub.invalid")
    url = local_server.add("f.bin", DATA, etag='W/"' + "cd" * 32 + '"')
    download(url, tmp_path / "f.bin", fetch=QUIET)
    assert read(tmp_path / "f.bin") == DATA
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(url, tmp_path / "g.bin", expect=Expect(trust_etag=True), fetch=QUIET)


def test_etag_parsing():
    h = "0123456789abcdef" * 4
    assert dl._etag_sha256(f'W/"{h}"') == h
    assert dl._etag_sha256(f'"{h.upper()}"') == h
    assert dl._etag_sha256(h) == h
    assert dl._etag_sha256('"' + "a" * 40 + '"') is None  # git sha1 of a non-LFS hub file
    assert dl._etag_sha256('"d41d8cd98f00b204e9800998ecf8427e-3"') is None  # S3 multipart
    assert dl._etag_sha256(None) is None


def test_404_says_what_to_download_and_where(local_server, tmp_path):
    url = local_server.url + "/missing/file.json"
    dest = tmp_path / "file.json"
    with pytest.raises(DownloadError) as e:
        download(url, dest, fetch=QUIET)
    msg = str(e.value)
    assert "HTTP 404" in msg and f"download {url} by hand and save it as {dest}" in msg
    assert not dest.exists()


def test_unreachable_host_says_what_to_download_and_where(tmp_path):
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/openai-community/gpt2/resolve/main/config.json"
    dest = tmp_path / "gpt2" / "config.json"
    with pytest.raises(DownloadError) as e:
        download(url, dest, fetch=QUIET)
    msg = str(e.value)
    assert "could not reach the server" in msg
    assert f"download {url} by hand and save it as {dest}" in msg
    assert "\n" not in msg


def test_existing_file_not_downloaded_again(local_server, tmp_path):
    url = local_server.add("f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"already here")
    assert download(url, dest, fetch=QUIET) == str(dest)
    assert local_server.requests == [] and read(dest) == b"already here"
    # a wrong size (known to the caller) means an incomplete file from elsewhere: fetch it again
    download(url, dest, expect=Expect(size=len(DATA)), fetch=QUIET)
    assert read(dest) == DATA and len(local_server.gets()) == 1


def test_concurrent_callers_download_once(local_server, tmp_path):
    url = local_server.add("f.bin", DATA, etag=True, delay=0.3)
    dest = tmp_path / "f.bin"
    errors = []

    def worker():
        try:
            download(url, dest, fetch=QUIET)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and read(dest) == DATA
    assert len(local_server.gets()) == 1
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_hf_url_and_cache_dir(local_server, tmp_path, monkeypatch):
    base = local_server.url
    assert hf_url("model", "openai-community/gpt2", "model.safetensors") == \
        f"{base}/openai-community/gpt2/resolve/main/model.safetensors"
    assert hf_url("dataset", "Anthropic/hh-rlhf", "helpful-base/train.jsonl.gz", revision="v1") == \
        f"{base}/datasets/Anthropic/hh-rlhf/resolve/v1/helpful-base/train.jsonl.gz"
    with pytest.raises(ValueError):
        hf_url("space", "a/b", "c")
    monkeypatch.setenv("NANODFT_HF_BASE", "https://mirror.example/")
    assert hf_url("model", "a/b", "c") == "https://mirror.example/a/b/resolve/main/c"
    d = cache_dir("models", "gpt2")
    assert d == str(tmp_path / "cache" / "models" / "gpt2") and os.path.isdir(d)
    monkeypatch.delenv("NANODFT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == str(tmp_path / "home" / ".cache" / "nanodft")


def test_cli(local_server, tmp_path):
    url = local_server.add("f.bin", DATA[:1000])
    dest = tmp_path / "f.bin"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "data.download", url, str(dest)], cwd=root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(dest) and read(dest) == DATA[:1000]
    r = subprocess.run([sys.executable, "-m", "data.download", url + "x", str(dest) + "x"], cwd=root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "by hand" in r.stderr and r.stderr.count("\n") == 1
