"""The public listener under both of aiohttp's HTTP parsers (llhttp, and the pure-Python one that
``AIOHTTP_NO_EXTENSIONS=1`` selects): every hostile or odd request gets the same answer from a real gateway process,
byte for byte as a raw socket sent it, and nothing refused ever reaches the backend."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.server.wire_support import (
    ACCEPTED,
    CHUNKED,
    PARSERS,
    REFUSED,
    Gateway,
    Response,
    connect,
    exchange,
    gateway_process,
    get,
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


@pytest.mark.parametrize(("request_bytes", "status"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_alike_under_both_parsers(gw: Gateway, request_bytes: bytes, status: int) -> None:
    assert_refused(gw, request_bytes, status)





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
