"""
Shared pytest fixtures.

local_server: an HTTP server on 127.0.0.1 (free port, background thread) serving a temporary folder,
so download code is tested without the internet. Unlike http.server's SimpleHTTPRequestHandler it
answers `Range: bytes=N-` with 206, and per file it can send ETag = sha256, cut the connection after
K body bytes, serve corrupted bytes, ignore ranges, wait before the body, or redirect.

    def test_x(local_server):
        url = local_server.add("a/b.bin", b"data", etag=True, cut_after=2)
        ...
        assert local_server.requests[-1]["headers"].get("Range") == "bytes=2-"
"""
import hashlib
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

# Tests run small tensors: one thread avoids oversubscribing the cores (the CI box has 2, and
# tests that spawn 2 processes would otherwise run 4 busy threads on them).
torch.set_num_threads(1)


class LocalServer:
    def __init__(self, root):
        self.root = str(root)
        self.requests = []  # one dict per request: method, path, headers
        self.options = {}  # url path -> dict of per-file options (see add)
        self.redirects = {}  # url path -> (target path, extra headers)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def add(self, relpath, data, etag=False, cut_after=None, cut_times=1, corrupt=False,
            ranges=True, delay=0.0):
        """Serve `data` at /relpath; returns its URL.

        etag: True -> ETag "<sha256 of data>"; a str -> that ETag verbatim.
        cut_after: send only this many body bytes (then close) on the next `cut_times` requests.
        corrupt: serve data with one byte flipped (the ETag still describes the true data).
        ranges: False -> ignore Range and answer 200 with the whole file.
        delay: seconds to wait before sending the body.
        """
        path = os.path.join(self.root, *relpath.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.options["/" + relpath] = dict(etag=etag, cut_after=cut_after, cut_times=cut_times,
                                           corrupt=corrupt, ranges=ranges, delay=delay)
        return self.url + "/" + relpath

    def redirect(self, relpath, target_relpath, headers=None):
        """Answer /relpath with a 302 to /target_relpath, adding `headers` (e.g. X-Linked-Etag)."""
        self.redirects["/" + relpath] = ("/" + target_relpath, dict(headers or {}))
        return self.url + "/" + relpath

    def gets(self):
        return [r for r in self.requests if r["method"] == "GET"]


def _make_handler(server: LocalServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _serve(self, head):
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            with server.lock:
                server.requests.append(dict(method=self.command, path=path, headers=dict(self.headers)))
            if path in server.redirects:
                target, extra = server.redirects[path]
                self.send_response(302)
                self.send_header("Location", target)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            local = os.path.normpath(os.path.join(server.root, path.lstrip("/")))
            if not local.startswith(server.root + os.sep) or not os.path.isfile(local):
                self.send_error(404, "Not Found")
                return
            with open(local, "rb") as f:
                data = f.read()
            opt = server.options.get(path, dict(etag=False, cut_after=None, cut_times=0, corrupt=False,
                                                ranges=True, delay=0.0))
            body = data
            if opt["corrupt"] and data:
                i = len(data) // 2
                body = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            status, headers = 200, {}
            if m and opt["ranges"]:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, body = 206, body[start:]
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if opt["ranges"]:
                self.send_header("Accept-Ranges", "bytes")
            if opt["etag"] is True:
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            elif opt["etag"]:
                self.send_header("ETag", opt["etag"])
            self.end_headers()
            if head:
                return
            if opt["delay"]:
                time.sleep(opt["delay"])
            with server.lock:
                cut = opt["cut_after"] is not None and opt["cut_times"] > 0
                if cut:
                    opt["cut_times"] -= 1
            # HTTP/1.0: the connection closes after the response, so a short body is a cut transfer
            self.wfile.write(body[:opt["cut_after"]] if cut else body)

    return Handler


@pytest.fixture
def local_server(tmp_path_factory):
    server = LocalServer(tmp_path_factory.mktemp("srv"))
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
