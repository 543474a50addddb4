"""A real HTTP server on 127.0.0.1 for the download tests, scripted per test.

    with serve() as server:
        server.route("/a.bin", serve_bytes(data))
        server.route("/b.bin", sequence(status(500), status(500), serve_bytes(data)))
        server.url("/a.bin"); server.requests_for("/a.bin")  # what the server saw

Each behaviour is a function ``(handler, data_request)`` that writes the whole answer;
``sequence`` picks one per request (the last repeats). Not a mock: requests goes through a
socket to ``http.server.ThreadingHTTPServer`` like it would to any web server.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    query: dict
    headers: dict
    time: float = field(default_factory=time.monotonic)

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


Behaviour = Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        parts = urlsplit(self.path)
        seen = Seen(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()})
        server: ScriptedServer = self.server.scripted
        with server.lock:
            server.requests.append(seen)
            behaviour = server.routes.get(parts.path)
        if behaviour is None:
            status(404)(self)
            return
        self.seen = seen
        try:
            behaviour(self)
        except (BrokenPipeError, ConnectionResetError):
            pass


class ScriptedServer:
    def __init__(self):
        self.routes: dict[str, Behaviour] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # releases handlers that hold a connection open
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.scripted = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, behaviour: Behaviour) -> str:
        with self.lock:
            self.routes[path] = behaviour
        return self.url(path)

    def requests_for(self, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@contextlib.contextmanager
def serve():
    server = ScriptedServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.httpd.shutdown()
        server.httpd.server_close()


def closed_port_url(path: str = "/file.bin") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# --------------------------------------------------------------------------- behaviours

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def serve_bytes(data: bytes, *, ranges: bool = True, content_type: str = "application/octet-stream",
                drop_after: int | None = None, delay: float = 0.0, chunk: int = 64 * 1024,
                chunk_delay: float = 0.0) -> Behaviour:
    """Serve ``data``: honouring ``Range`` (206) unless ``ranges=False`` (then always 200 and the
    whole file), optionally after ``delay`` seconds, and optionally dropping the connection
    after ``drop_after`` bytes of the body (the Content-Length still promises all of them)."""

    def behaviour(handler):
        if delay:
            time.sleep(delay)
        start = 0
        match = _RANGE.match(handler.headers.get("Range", "") or "")
        if ranges and match:
            start = int(match.group(1))
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            body = data[start:]
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            handler.send_response(200)
            if ranges:
                handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.sent_body = 0
        limit = len(body) if drop_after is None else min(drop_after, len(body))
        offset = 0
        while offset < limit:
            piece = body[offset:min(limit, offset + chunk)]
            handler.wfile.write(piece)
            handler.wfile.flush()
            offset += len(piece)
            if chunk_delay:
                time.sleep(chunk_delay)
        handler.sent_body = offset
        if drop_after is not None:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)

    return behaviour


def status(code: int, body: bytes = b"", content_type: str = "text/plain") -> Behaviour:
    def behaviour(handler):
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behaviour


def html(page: str, code: int = 200) -> Behaviour:
    return status(code, page.encode("utf-8"), "text/html; charset=utf-8")


def sleep_then(seconds: float, then: Behaviour) -> Behaviour:
    def behaviour(handler):
        time.sleep(seconds)
        then(handler)

    return behaviour


def sequence(*behaviours: Behaviour) -> Behaviour:
    """The n-th request gets the n-th behaviour; the last one repeats."""
    lock = threading.Lock()
    count = [0]

    def behaviour(handler):
        with lock:
            index = min(count[0], len(behaviours) - 1)
            count[0] += 1
        behaviours[index](handler)

    return behaviour


def endless(*, limit: int = 64 * 1024 * 1024, chunk: int = 64 * 1024) -> Behaviour:
    """200 without a Content-Length, then bytes until the client hangs up (or ``limit``, so a
    client that never stops still ends): a broken mirror that streams forever. The bytes
    written so far are in ``behaviour.sent`` (one count per request)."""

    def behaviour(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        index = len(behaviour.sent)
        behaviour.sent.append(0)
        piece = bytes(chunk)
        try:
            while behaviour.sent[index] < limit:
                handler.wfile.write(piece)
                behaviour.sent[index] += len(piece)
        except OSError:  # the client hung up: what a good client does
            pass

    behaviour.sent = []
    return behaviour


def silent(*, announce: int | None = None, longest: float = 30.0) -> Behaviour:
    """Accept the request and never answer (or, with ``announce``, send the headers of a 200
    with that Content-Length and then nothing): a hung server. The connection is held until
    the client gives up, the test ends, or ``longest`` seconds."""

    def behaviour(handler):
        if announce is not None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(announce))
            handler.end_headers()
            handler.wfile.flush()
        handler.server.scripted.stopping.wait(longest)
        handler.close_connection = True

    return behaviour
