"""Large transfers through a proxy: a streamed download and a streamed upload, both generated on the fly.

The client is a blocking socket with httptools parsing the response (Content-Length or chunked framing, as the
proxy chooses), so the body is counted, never kept. The upload sends one reused 1 MiB buffer ``size // 1 MiB``
times; the backend counts what arrives and answers ``{"received": N}``, which must equal what was sent.

While a transfer runs, a sampler thread reads the proxy's VmRSS every 20 ms; the peak (VmHWM, reset just before
the transfer) minus the resident size before it is the memory the transfer cost.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass

import httptools

from tests.bench import procs

BUF = 1024 * 1024


@dataclass
class TransferResult:
    direction: str        # "download" | "upload"
    size: int
    body_bytes: int       # download: body bytes received; upload: what the backend says it received
    status: int
    seconds: float
    ok: bool
    error: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / self.seconds if self.seconds > 0 else 0.0


class _Response:
    def __init__(self) -> None:
        self.body_bytes = 0
        self.body = bytearray()
        self.keep_body = False
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.keep_body and len(self.body) < 4096:
            self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def _read_response(sock: socket.socket, keep_body: bool) -> tuple[int, _Response]:
    resp = _Response()
    resp.keep_body = keep_body
    parser = httptools.HttpResponseParser(resp)
    buf = bytearray(BUF)
    view = memoryview(buf)
    while not resp.done:
        n = sock.recv_into(buf)
        if n == 0:
            parser.feed_data(b"")  # lets a close-delimited body finish; a cut framed body stays incomplete
            break
        parser.feed_data(view[:n])
    return parser.get_status_code(), resp


def download(port: int, size: int, timeout: float = 120.0) -> TransferResult:
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            status, resp = _read_response(sock, keep_body=False)
    except (OSError, httptools.HttpParserError) as exc:
        return TransferResult("download", size, 0, 0, time.perf_counter() - started, False, repr(exc))
    seconds = time.perf_counter() - started
    ok = status == 200 and resp.done and resp.body_bytes == size
    error = "" if ok else f"status {status}, {resp.body_bytes} of {size} bytes, complete={resp.done}"
    return TransferResult("download", size, resp.body_bytes, status, seconds, ok, error)


def upload(port: int, size: int, timeout: float = 120.0) -> TransferResult:
    chunk = memoryview(b"u" * BUF)
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall((f"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
                          f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode())
            left = size
            while left > 0:
                n = min(left, BUF)
                sock.sendall(chunk[:n])
                left -= n
            status, resp = _read_response(sock, keep_body=True)
    except (OSError, httptools.HttpParserError) as exc:
        return TransferResult("upload", size, 0, 0, time.perf_counter() - started, False, repr(exc))
    seconds = time.perf_counter() - started
    try:
        received = int(json.loads(bytes(resp.body))["received"])
    except (ValueError, KeyError, TypeError):
        received = -1
    ok = status == 200 and received == size
    error = "" if ok else f"status {status}, backend received {received} of {size} bytes"
    return TransferResult("upload", size, received, status, seconds, ok, error)


class RssSampler:
    """Peak resident memory of a process tree while a transfer runs."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.before_kib = sum(procs.status_kib(p, "VmRSS") for p in pids)
        self.max_kib = self.before_kib
        self.hwm_reset = all(procs.reset_peak_rss(p) for p in pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self.max_kib = max(self.max_kib, sum(procs.status_kib(p, "VmHWM") for p in self.pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.max_kib = max(self.max_kib, sum(procs.status_kib(p, "VmRSS") for p in self.pids))

    @property
    def growth_mib(self) -> float:
        return (self.max_kib - self.before_kib) / 1024
