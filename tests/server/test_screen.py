"""The request screen as a pure function of the byte stream: the same verdict however the bytes are split into
reads, message boundaries found exactly (pipelining, bodies, trailers), and the position of a refusal reported so
that the requests before it are still served."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.server.grammar import split_host
from gateway.server.screen import Refused, Screen
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


SERVED = b"GET /before HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize(("request_bytes", "status"),
                         [*SCREENED.values(), *((r, None) for r in ACCEPTED.values())],
                         ids=[*SCREENED, *ACCEPTED])
def test_a_connection_that_was_served_before_gives_the_same_verdict(request_bytes: bytes, status: int | None) -> None:
    """The screen remembers the field block of a connection's previous plain head (keep-alive clients repeat it);
    what it remembers never changes a verdict, whether the next head repeats the block or not."""
    screen = Screen(LIMIT)
    for _ in range(2):   # the second time from what the first left behind
        assert screen.feed(SERVED) == SERVED
    try:
        screen.feed(request_bytes)
        got = None
    except Refused as refused:
        got = refused.error.status
    assert got == status
    # The same request line with the remembered block, then a request line that breaks a rule with it.
    screen = Screen(LIMIT)
    screen.feed(SERVED)
    assert screen.feed(SERVED.replace(b"/before", b"/again")) == SERVED.replace(b"/before", b"/again")
    with pytest.raises(Refused) as refused:
        screen.feed(SERVED.replace(b"GET", b"get"))
    assert refused.value.error.status == 400


def test_a_remembered_verdict_holds_only_for_the_same_version_method_rules_and_no_body() -> None:
    """A repeated field block of a bodyless head skips the checks; a new version, an unknown method or a body
    still get them (the state machine must still see the body)."""
    screen = Screen(LIMIT)
    old = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    assert screen.feed(old) == old
    assert screen.feed(old) == old
    with pytest.raises(Refused) as refused:   # the same fields, now in HTTP/1.1, lack Host
        screen.feed(old.replace(b"HTTP/1.0", b"HTTP/1.1"))
    assert refused.value.error.status == 400
    screen = Screen(LIMIT)
    get = b"GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\n"
    assert screen.feed(get) == get
    assert screen.feed(get) == get
    with pytest.raises(Refused) as refused:
        screen.feed(get.replace(b"GET", b"BREW"))
    assert refused.value.error.status == 501
    screen = Screen(LIMIT)
    post = b"POST /a HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 14\r\n\r\n"
    for _ in range(3):
        assert screen.feed(post) == post
        # Body bytes that look like a request line: taken as the body, not screened as a head.
        assert screen.feed(b"GET / HTTP/9.9") == b"GET / HTTP/9.9"
    assert screen.feed(get) == get


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(sorted(SCREENED) + sorted(ACCEPTED)), cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_any_split_gives_the_same_verdict(case: str, cuts: list[int]) -> None:
    data, status = SCREENED[case] if case in SCREENED else (ACCEPTED[case], None)
    assert verdict(pieces(data, cuts)) == status


def passed_on(chunks: list[bytes]) -> bytes:
    screen = Screen(LIMIT)
    return b"".join(screen.feed(chunk) for chunk in chunks)


@settings(max_examples=100, deadline=None)
@given(case=st.sampled_from(sorted(ACCEPTED)), cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_what_is_accepted_reaches_the_parser_unchanged_however_it_arrives(case: str, cuts: list[int]) -> None:
    assert passed_on(pieces(ACCEPTED[case], cuts)) == ACCEPTED[case]


def test_a_head_reaches_the_parser_only_once_whole() -> None:
    screen = Screen(LIMIT)
    assert screen.feed(b"FO") == b""       # llhttp would refuse "FO" at once, before the screen could answer 501
    with pytest.raises(Refused) as refused:
        screen.feed(b"O / HTTP/1.1\r\n")
    assert refused.value.error.status == 501 and refused.value.before == b""
    screen = Screen(LIMIT)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert screen.feed(head[:10]) == b"" and screen.feed(head[10:] + b"5\r\nhel") == head + b"5\r\nhel"
    assert screen.feed(b"lo\r\n0\r\nX-T") == b"lo\r\n0\r\n"     # the trailer section waits to be whole
    assert screen.feed(b": 1\r\n\r\n") == b"X-T: 1\r\n\r\n"


def test_pipelined_requests_with_bodies_are_delimited_exactly() -> None:
    first = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nGET /"      # a body that looks like a request
    second = b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n"
    bad = b"GET  /c HTTP/1.1\r\nHost: h\r\n\r\n"
    screen = Screen(LIMIT)
    with pytest.raises(Refused) as refused:
        screen.feed(first + second + bad)
    assert refused.value.before == first + second         # both earlier requests go to the parser
    assert not refused.value.in_body


def test_a_fault_in_a_body_already_handed_over_is_reported_as_such() -> None:
    screen = Screen(LIMIT)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"
    assert screen.feed(head) == head
    with pytest.raises(Refused) as refused:
        screen.feed(b"1\r\nx\r\nZZ\r\n")
    assert refused.value.in_body
    assert refused.value.before == b"1\r\nx\r\n"    # the good chunk before the bad size line still goes through


def test_after_connection_close_nothing_more_is_passed_on() -> None:
    screen = Screen(LIMIT)
    first = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    assert screen.feed(first + b"GET /more HTTP/1.1\r\n") == first
    assert screen.feed(b"anything") == b""


def test_an_upgrade_ends_screening_until_it_is_declined() -> None:
    screen = Screen(LIMIT)
    head = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    frames = b"\x81\x85garbage that is not HTTP"
    assert screen.feed(head + frames) == head + frames
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
