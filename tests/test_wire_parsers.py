"""The public listener under both of aiohttp's HTTP parsers (llhttp, and the pure-Python one that
``AIOHTTP_NO_EXTENSIONS=1`` selects): every hostile or odd request gets the same answer from a real gateway process,
byte for byte as a raw socket sent it, and nothing refused ever reaches the backend."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.wire_support import (
    PARSERS,
    Gateway,
    Response,
    connect,
    exchange,
    gateway_process,
    parser_env,
    read_response,
)


@pytest.fixture(scope="module", params=PARSERS)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_process(request.param, tmp_path_factory.mktemp(request.param)) as gateway:
        yield gateway


def test_each_variant_runs_the_parser_it_names(gw: Gateway) -> None:
    probe = "import aiohttp.http_parser as p; print(p.HttpRequestParser.__module__)"
    out = subprocess.run([sys.executable, "-c", probe], env=parser_env(gw.parser), capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == {"llhttp": "aiohttp._http_parser", "python": "aiohttp.http_parser"}[gw.parser]


def assert_refused(gw: Gateway, request: bytes, status: int) -> Response:
    """The gateway answers ``status`` as problem+json in HTTP/1.1 with ``Connection: close``, and closes the
    connection, and the backend never hears of the request. (After a 413 the server first reads and discards what
    the client still uploads for a while, the lingering close of RFC 9112 §9.6, so that the client gets to read
    the answer: only its ``Connection: close`` is checked.)"""
    before = len(gw.backend.seen)
    resp = exchange(gw.public, request, check_close=status != 413)
    assert resp.status_line.startswith(b"HTTP/1.1 %d " % status), (resp.status_line, resp.body[:300])
    assert resp.header("Content-Type") == "application/problem+json"
    assert json.loads(resp.body)["status"] == status
    assert resp.header("Connection") == "close"
    assert resp.closed in (True, None)
    assert len(gw.backend.seen) == before
    return resp


def get(target: str = "/", *fields: str, method: str = "GET", version: str = "HTTP/1.1", host: str | None = "h",
        body: bytes = b"") -> bytes:
    head = f"{method} {target} {version}\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    return (head + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode("latin-1") + body


CHUNKED = "Transfer-Encoding: chunked"

REFUSED = {
    # Where the two parsers disagreed: each now gets the stricter answer, under both.
    "chunked-twice": (get("/", "Transfer-Encoding: chunked, chunked", method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"),
                      400),
    "lower-case-method": (get(method="get"), 400),
    "unknown-method": (get(method="FOO"), 501),
    "double-space-before-target": (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "double-space-before-version": (b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "raw-utf8-in-path": ("GET /caf\u00e9 HTTP/1.1\r\nHost: h\r\n\r\n".encode(), 400),
    "chunk-size-overflow": (get("/", CHUNKED, method="POST", body=b"FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n"), 400),
    "content-length-as-trailer": (get("/", CHUNKED, method="POST", body=b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n"),
                                  400),
    # Transfer codings (RFC 9112 §6.1, §6.3) and framing, as nginx answers them.
    "gzip-then-chunked": (get("/", "Transfer-Encoding: gzip, chunked", method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"),
                          501),
    "gzip-only": (get("/", "Transfer-Encoding: gzip", method="POST", body=b"abc"), 400),
    "chunked-and-length": (get("/", CHUNKED, "Content-Length: 3", method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "chunked-in-http-1.0": (get("/", CHUNKED, method="POST", version="HTTP/1.0", body=b"3\r\nabc\r\n0\r\n\r\n"),
                            400),
    "two-lengths": (get("/", "Content-Length: 3", "Content-Length: 3", method="POST", body=b"abc"), 400),
    "bad-chunk-extension": (get("/", CHUNKED, method="POST", body=b"3;a b\r\nabc\r\n0\r\n\r\n"), 400),
    "connect": (get("h:443", method="CONNECT", host="h:443"), 501),
    # Malformed fields.
    "obs-fold": (get("/", "X-Folded: a", " b"), 400),
    "space-before-colon": (get("/", "X-Space : a"), 400),
    "bare-lf": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    # Host (RFC 9112 §3.2, RFC 3986 §3.2.2).
    "host-with-userinfo-and-path": (get(host="a@evil.com/x"), 400),
    "host-with-path": (get(host="evil.com/x"), 400),
    "host-list": (get(host="a.example,b.example"), 400),
    "host-port-out-of-range": (get(host="a.example:99999"), 400),
    "host-broken-ipv6": (get(host="[::1"), 400),
    "no-host": (get(host=None), 400),
    "two-hosts": (get("/", "Host: other"), 400),
    # Versions: answered in HTTP/1.1, and the connection closed (RFC 9110 §15.6.6, RFC 9112 §2.3).
    "http-2.0": (get(version="HTTP/2.0"), 505),
    "http-1.2": (get(version="HTTP/1.2"), 505),
    "http-3.0": (get(version="HTTP/3.0"), 505),
    "not-a-version": (get(version="HTTP/1.1x"), 400),
    # Sizes: the whole head, one field, the number of fields, the target.
    "head-of-1.9MB": (get("/", *(f"X-F{i}: {'a' * 16000}" for i in range(120))), 431),
    "field-over-16KiB": (get("/", f"X-Big: {'b' * 17000}"), 431),
    "101-fields": (get("/", *(f"X-F{i}: v" for i in range(101))), 431),
    "target-over-16KiB": (get("/" + "t" * 17000), 414),
    "body-over-max_request_body": (get("/", "Content-Length: 2048", method="POST"), 413),
}


@pytest.mark.parametrize(("request_bytes", "status"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_alike_under_both_parsers(gw: Gateway, request_bytes: bytes, status: int) -> None:
    assert_refused(gw, request_bytes, status)


ACCEPTED = {
    "head-just-under-64KiB": get("/", *(f"X-F{i}: {'a' * 10000}" for i in range(6))),
    "host-with-port": get(host="shop.example:8080"),
    "host-ipv6": get(host="[::1]:8080"),
    "host-empty": get(host=""),
    "webdav-method": get(method="PROPFIND"),
    "empty-line-before-request": b"\r\n" + get(),
    "chunked-with-extension-and-trailer": get("/", CHUNKED, method="POST",
                                              body=b"3;ext=1\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n"),
    "http-1.0": get(version="HTTP/1.0", host=None),
}


@pytest.mark.parametrize("request_bytes", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_alike_under_both_parsers(gw: Gateway, request_bytes: bytes) -> None:
    before = len(gw.backend.seen)
    resp = exchange(gw.public, request_bytes)
    assert resp.status == 200, (resp.status_line, resp.body[:300])
    assert len(gw.backend.seen) == before + 1


def test_a_head_growing_past_the_limit_is_cut_off_before_it_ends(gw: Gateway) -> None:
    with connect(gw.public) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
        for i in range(10):          # 80 KB of fields, never the blank line that ends the head
            sock.sendall(f"X-F{i}: {'a' * 8000}\r\n".encode())
        resp = read_response(sock, check_close=True)
    assert resp.status == 431
    assert resp.closed


def test_a_bad_chunk_after_the_head_fails_the_request_not_the_backend(gw: Gateway) -> None:
    """The head went on to the backend (the body streams); the broken chunk that follows in a later packet ends the
    exchange with 400 and the connection, and the backend never sees a complete request."""
    before = len(gw.backend.seen)
    with connect(gw.public) as sock:
        sock.sendall(get("/", CHUNKED, method="POST", body=b"3\r\nabc\r\n"))
        resp = None
        sock.settimeout(0.3)
        try:
            sock.recv(1, 0x2)    # MSG_PEEK: nothing may be answered before the rest arrives
            raise AssertionError("answered before the body was complete")
        except TimeoutError:
            pass
        sock.settimeout(5)
        sock.sendall(b"FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n")
        resp = read_response(sock, check_close=True)
    assert resp.status == 400
    assert resp.header("Connection") == "close" and resp.closed
    assert len(gw.backend.seen) == before


@pytest.mark.parametrize(("pieces", "status"), [
    ([b"F", b"O", b"O / HTTP/1.1\r\nHost: h\r\n\r\n"], 501),
    ([b"GET / HTTP/1.1\r\nHo", b"st: a@evil.com/x\r\n", b"\r\n"], 400),
    ([b"GET / HTTP/2", b".0\r\nHost: h\r\n\r\n"], 505),
], ids=["method", "host", "version"])
def test_a_request_arriving_in_pieces_gets_the_same_answer(gw: Gateway, pieces: list[bytes], status: int) -> None:
    with connect(gw.public) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.05)    # separate reads on the gateway's side, as a slow client's would be
        resp = read_response(sock, check_close=True)
    assert resp.status == status and resp.closed


def test_requests_before_a_refused_one_are_answered_first(gw: Gateway) -> None:
    with connect(gw.public) as sock:
        sock.sendall(get("/first") + b"GET  /second HTTP/1.1\r\nHost: h\r\n\r\n")
        buffered = bytearray()
        first = read_response(sock, buffered)
        second = read_response(sock, buffered, check_close=True)
    assert first.status == 200 and json.loads(first.body)["path"] == "/first"
    assert second.status == 400 and second.closed


def test_nothing_after_connection_close_is_read(gw: Gateway) -> None:
    before = len(gw.backend.seen)
    resp = exchange(gw.public, get("/one", "Connection: close") + get("/two"), check_close=True)
    assert resp.status == 200 and resp.closed
    assert [s.raw_path for s in gw.backend.seen[before:]] == ["/one"]


def test_te_header_is_hop_by_hop_and_changes_nothing(gw: Gateway) -> None:
    """``TE`` says which transfer codings the client accepts in the response (RFC 9110 §10.1.4): it belongs to
    the client's connection, so it is not forwarded (nginx drops it too), and the answer is not re-coded."""
    resp = exchange(gw.public, get("/te", "TE: gzip, chunked"))
    assert resp.status == 200
    assert resp.header("Transfer-Encoding") is None
    seen = gw.backend.seen[-1]
    assert seen.raw_path == "/te"
    assert "te" not in {k.lower() for k, _ in seen.headers}


def test_header_names_with_underscores_are_dropped(gw: Gateway) -> None:
    resp = exchange(gw.public, get("/u", "X_Real_IP: 1.2.3.4", "Transfer_Encoding: chunked", "X-Kept: yes"))
    assert resp.status == 200
    names = {k.lower() for k, _ in gw.backend.seen[-1].headers}
    assert "x-kept" in names
    assert not {n for n in names if "_" in n}


@pytest.mark.parametrize("path", ["/bare", "/bare/big"], ids=["whole", "streamed"])
def test_no_content_type_or_server_is_invented(gw: Gateway, path: str) -> None:
    resp = exchange(gw.public, get(path))
    assert resp.status == 200 and resp.body
    assert resp.header("Content-Type") is None
    assert resp.header("Server") is None
    assert resp.header("Date") is not None     # a recipient with a clock adds it (RFC 9110 §6.6.1)


@pytest.mark.parametrize(("target", "forwarded"), [
    ("/admin;x=1", "/new/admin;x=1"),          # matched as /admin; the parameter goes along
    ("/public/..;/admin", "/new/admin"),       # '..;' is '..' to a Java backend: resolved before forwarding
    ("/public/..;x=1/admin/y", "/new/admin/y"),
    ("/admin;/x", "/new/admin;/x"),
    ("/public;x=1", "/public;x=1"),            # not the admin route: the fallback, unchanged
])
def test_paths_with_parameters_take_the_route_a_java_backend_would_serve(gw: Gateway, target: str,
                                                                         forwarded: str) -> None:
    resp = exchange(gw.public, get(target))
    assert resp.status == 200
    assert gw.backend.seen[-1].raw_path == forwarded
