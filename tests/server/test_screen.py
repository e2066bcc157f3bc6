"""The request screen as a pure function of the byte stream: the same verdict however the bytes are split into
reads, message boundaries found exactly (pipelining, bodies, trailers), and the position of a refusal reported so
that the requests before it are still served."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.server.screen import Refused, Screen, split_host
from tests.server.wire_support import ACCEPTED, REFUSED

LIMIT = 64 * 1024


def verdict(chunks: list[bytes]) -> int | None:
    """The status the screen refuses with (None: accepted) when the stream arrives in these pieces."""
    screen = Screen(LIMIT)
    try:
        for chunk in chunks:
            screen.feed(chunk)
    except Refused as refused:
        return refused.error.status
    return None


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


SCREENED = {name: (request, status) for name, (request, status) in REFUSED.items() if status != 413}


@pytest.mark.parametrize(("request_bytes", "status"), list(SCREENED.values()), ids=list(SCREENED))
def test_refused_whole_and_byte_by_byte(request_bytes: bytes, status: int) -> None:
    assert verdict([request_bytes]) == status
    if len(request_bytes) < 5000:
        assert verdict([bytes([b]) for b in request_bytes]) == status


@pytest.mark.parametrize("request_bytes", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_whole_and_byte_by_byte(request_bytes: bytes) -> None:
    assert verdict([request_bytes]) is None
    assert verdict([bytes([b]) for b in request_bytes[:5000]] + [request_bytes[5000:]]) is None


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(sorted(SCREENED) + sorted(ACCEPTED)), cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_any_split_gives_the_same_verdict(case: str, cuts: list[int]) -> None:
    data, status = SCREENED[case] if case in SCREENED else (ACCEPTED[case], None)
    assert verdict(pieces(data, cuts)) == status


def test_pipelined_requests_with_bodies_are_delimited_exactly() -> None:
    first = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nGET /"      # a body that looks like a request
    second = b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n"
    bad = b"GET  /c HTTP/1.1\r\nHost: h\r\n\r\n"
    screen = Screen(LIMIT)
    with pytest.raises(Refused) as refused:
        screen.feed(first + second + bad)
    assert refused.value.offset == len(first + second)     # both earlier requests go to the parser
    assert not refused.value.in_body


def test_a_fault_in_a_body_already_handed_over_is_reported_as_such() -> None:
    screen = Screen(LIMIT)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"
    assert screen.feed(head) == len(head)
    with pytest.raises(Refused) as refused:
        screen.feed(b"1\r\nx\r\nZZ\r\n")
    assert refused.value.in_body
    assert refused.value.offset == 6    # the good chunk before the bad size line still goes through


def test_after_connection_close_nothing_more_is_passed_on() -> None:
    screen = Screen(LIMIT)
    first = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    assert screen.feed(first + b"GET /more HTTP/1.1\r\n") == len(first)
    assert screen.feed(b"anything") == 0


def test_an_upgrade_ends_screening_until_it_is_declined() -> None:
    screen = Screen(LIMIT)
    head = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    frames = b"\x81\x85garbage that is not HTTP"
    assert screen.feed(head + frames) == len(head + frames)
    screen.resume()
    with pytest.raises(Refused):
        screen.feed(b"get / HTTP/1.1\r\n")


def test_the_head_limit_is_configurable() -> None:
    request = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * 3000 + b"\r\n\r\n"
    Screen(4096).feed(request)
    with pytest.raises(Refused) as refused:
        Screen(2048).feed(request)
    assert refused.value.error.status == 431


def test_underscores_refused_only_when_configured() -> None:
    request = b"GET / HTTP/1.1\r\nHost: h\r\nX_User: root\r\n\r\n"
    Screen(LIMIT, "drop").feed(request)
    Screen(LIMIT, "pass").feed(request)
    with pytest.raises(Refused) as refused:
        Screen(LIMIT, "refuse").feed(request)
    assert refused.value.error.status == 400


@pytest.mark.parametrize(("value", "expected"), [
    ("shop.example", ("shop.example", None)),
    ("Shop.Example:8080", ("shop.example", 8080)),
    ("[::1]:9901", ("::1", 9901)),
    ("127.0.0.1", ("127.0.0.1", None)),
    ("h:", ("h", None)),
    ("", ("", None)),
    ("a@evil.com/x", None),
    ("evil.com/x", None),
    ("a,b", None),
    ("a b", None),
    ("a%41", None),
    ("[fe80::1%eth0]", None),
    ("[1.2.3.4]", None),
    ("h:65536", None),
    ("h:123456", None),
])
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected
