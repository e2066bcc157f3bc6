"""What the public listener accepts on the wire, checked on the client's bytes before aiohttp's parser sees them.

aiohttp has two HTTP parsers: llhttp (C) and a pure-Python one (used where the C extension is missing, or with
``AIOHTTP_NO_EXTENSIONS=1``). They disagree at the edges: one refuses what the other reads, and sometimes reads
it differently (lower-case methods upper-cased, raw UTF-8 in the target percent-encoded, an overflowing chunk size
waited for). The gateway must answer the same whichever is installed, so it draws the line itself, at the
stricter of the two, and the parser only ever sees messages both would read alike.

A ``Screen`` follows the byte stream of one connection, message by message::

    HEAD --> LENGTH (Content-Length bytes)                         --> HEAD (next request)
         --> CHUNK_SIZE -> CHUNK_DATA -> CHUNK_CRLF ... -> TRAILERS     --> CLOSED (Connection: close: the rest is
                                                                             not read)
                                                                        --> PASS (an upgrade: no longer HTTP/1)

and raises ``Refused`` (an aiohttp ``BadHttpMessage``, so the server answers it like any parse error) carrying the
``GatewayError`` to answer, at the first rule broken:

    request line   METHOD SP target SP HTTP/x.y, single spaces (RFC 9112 §3)                      400
                   a version other than 1.0 and 1.1 (RFC 9110 §15.6.6)                            505
                   method: upper-case token; one llhttp knows (RFC 9110 §9.1: case-sensitive)     400 / 501
                   CONNECT: the gateway is not a forward proxy (RFC 9110 §9.3.6)                  501
                   target: visible ASCII only, raw UTF-8 must be percent-encoded (RFC 9112 §3.2)  400
                   longer than 16 KiB                                                            414
    fields         name ":" value, a token name, no control characters, no obs-fold
                   (RFC 9110 §5.1, §5.5; RFC 9112 §5.1, §5.2), lines ending in CRLF               400
                   a field over 16 KiB, over 100 fields, a head over ``limits.max_request_head``  431
                   a name with '_' when ``limits.underscores_in_headers`` is ``refuse``          400
    Host           exactly one in HTTP/1.1, at most one, a valid host[:port] (RFC 9112 §3.2)      400
    framing        Content-Length: one field of digits; never with Transfer-Encoding (§6.3)      400
                   Transfer-Encoding: HTTP/1.1 only, chunked once and last (§6.1, §6.3)          400
                   ... with another coding before chunked (§6.1; nginx answers the same)          501
    chunked body   hex chunk size below 2**63, extensions as in RFC 9112 §7.1.1, CRLF after data,
                   trailer fields well formed and never framing or Host (RFC 9110 §6.5.1)        400

The parser only ever receives what the screen passed whole: a request head once it is complete and valid, a chunk
size line or a trailer section once it is, body bytes as they come. Otherwise a parser that judges a line while it
is still arriving (llhttp refuses ``FO`` of ``FOO`` at once, as 400) would answer before the screen could.

Only bytes go in and only bytes (and ``Refused``) come out, so the screen is a pure function of the stream: the
tests drive it directly, and ``ScreenedParser`` puts it in front of whichever parser aiohttp chose.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.http_exceptions import BadHttpMessage

from gateway.errors import (
    GatewayError,
    HeaderFieldsTooLarge,
    MalformedRequest,
    Unimplemented,
    UriTooLong,
    VersionNotSupported,
)
from gateway.server.grammar import (
    CHUNK_LINE,
    DIGITS,
    FIELD,
    MAX_CHUNK,
    MAX_FIELD,
    MAX_FIELDS,
    MAX_TARGET,
    METHODS,
    NOT_TRAILERS,
    PLAIN_FIELDS,
    PLAIN_REQUEST_LINE,
    TARGET,
    TOKEN_RE,
    UNDERSCORE_NAME,
    UPGRADES,
    UPPER_METHOD,
    VERSION,
    WATCHED,
    WATCHED_LINES,
    valid_host,
)

_NONE: frozenset[bytes] = frozenset()

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _CLOSED, _PASS = range(8)
_BODYLESS_NEXT = frozenset({_HEAD, _CLOSED, _PASS})   # where a head without a body leaves the connection


class Refused(BadHttpMessage):
    """A request the screen refuses. ``error`` is the answer; ``before`` the screened bytes of this read that still
    go to the parser (earlier requests, or the good part of a body); ``in_body`` whether the fault is in the body
    of a request already handed to the server (which then fails through its body stream: its answer is under
    way)."""

    def __init__(self, error: GatewayError, before: bytes = b"", in_body: bool = False) -> None:
        super().__init__(error.detail)
        self.error = error
        self.before = before
        self.in_body = in_body


class Screen:
    """The rules above, applied to one connection's bytes as they arrive."""

    def __init__(self, max_head: int, underscores: str = "drop") -> None:
        self.max_head = max_head
        self._whole_limit = min(max_head, MAX_FIELD)   # a head longer than this takes the line-by-line path
        self._last_fields: bytes | None = None          # the previous plain head's field block, and its fields
        self._last_watched: dict[bytes, list[bytes]] = {}
        # The verdict on the previous plain head when it had no body: its HTTP minor version and the state the
        # connection went to (more requests, closed, or upgraded). A head with the same field block and version
        # gets the same verdict: ``_head_done`` reads only those.
        self._last_minor = b""
        self._last_after: int | None = None
        self._last_method = b""                          # the last method found among METHODS
        self.refuse_underscores = underscores == "refuse"
        self._state = _HEAD
        self._line = bytearray()      # a line not complete yet
        self._held = bytearray()      # screened bytes of a head or framing line not complete yet: not passed on
        self._left = 0                # body bytes (Content-Length, or of the current chunk) still to come
        self._crlf = 0                # bytes of the CRLF after chunk data already seen
        self._after = _HEAD           # what follows the current message
        self._messages = 0            # messages screened whole
        self._new_message()

    def _new_message(self) -> None:
        self._size = 0                # bytes of the head (or of the trailer section) so far
        self._count = 0
        self._request: tuple[bytes, tuple[int, int]] | None = None   # (method, version) once the line is read
        self._fields: dict[bytes, list[bytes]] = {}

    def resume(self) -> None:
        """aiohttp went back to HTTP/1 after an upgrade the handler declined: the next bytes are a request."""
        self._state = _HEAD
        self._line.clear()
        self._held.clear()
        self._new_message()

    def feed(self, data: bytes) -> bytes:
        """The bytes to pass to the parser now: complete heads and framing lines, and body bytes, in order (the
        start of a head or line still arriving is held back until it is whole); nothing after a message that closes
        the connection (RFC 9112 §9.6: it is not read). Raises ``Refused`` at the first broken rule."""
        end = len(data)
        if (self._state == _HEAD and self._request is None and not self._line and not self._held
                and self._size == 0 and data.find(b"\r\n\r\n") == end - 4):
            # Nearly every read: exactly one whole request head, nothing before or after it.
            try:
                if self._whole_head(data, 0, end - 4):
                    return data
            except _Fault as fault:
                raise Refused(fault.error, b"") from None
        pos = 0
        out: list[bytes] = []         # what goes to the parser, in order
        mark = 0                      # data[mark:pos] is screened, not yet passed on nor held
        head_at = -1                  # len(out) before the head of the message in progress, if passed on here
        while pos < end:
            state = self._state
            if state == _PASS:        # no longer HTTP/1 messages: everything goes through
                out.append(data[mark:])
                mark = end
                break
            if state == _CLOSED:      # the rest is dropped
                mark = end
                break
            done = self._messages
            try:
                if state == _HEAD:
                    pos = self._head(data, pos, end)
                elif state == _LENGTH or state == _CHUNK_DATA:
                    take = min(self._left, end - pos)
                    pos += take
                    self._left -= take
                    if not self._left:
                        if state == _LENGTH:
                            self._done()
                        else:
                            self._state, self._crlf = _CHUNK_CRLF, 0
                elif state == _CHUNK_CRLF:
                    if data[pos] != b"\r\n"[self._crlf]:
                        raise _Fault(MalformedRequest("a chunk's data is not followed by CRLF (RFC 9112 §7.1)"))
                    pos += 1
                    self._crlf += 1
                    if self._crlf == 2:
                        self._state = _CHUNK_SIZE
                elif state == _CHUNK_SIZE:
                    pos = self._chunk_size(data, pos, end)
                else:
                    pos = self._trailers(data, pos, end)
            except _Fault as fault:
                if state == _HEAD or head_at >= 0:
                    # The server has not seen this request: it is answered at once, no backend hears of it.
                    raise Refused(fault.error, b"".join(out[:head_at] if head_at >= 0 else out)) from None
                raise Refused(fault.error, b"".join(out), in_body=True) from None
            whole = (self._state != state or self._messages != done
                     or state in (_LENGTH, _CHUNK_DATA, _CHUNK_CRLF))
            if whole:                 # a head, line or section completed, or body bytes: pass them on
                if state == _HEAD:
                    head_at = len(out)
                if self._held:
                    out.append(bytes(self._held))
                    self._held.clear()
                out.append(data[mark:pos])
                mark = pos
            if self._messages != done:
                head_at = -1
        if mark < end and self._state != _CLOSED:
            self._held += data[mark:end]
        if len(out) == 1 and len(out[0]) == end:
            return data
        return b"".join(out)

    # -- the head ------------------------------------------------------------------------------------------------

    def _lines(self, data: bytes, pos: int, end: int, limit: int) -> tuple[bytes | None, int]:
        """The next complete line (without its CRLF) and the position after it, or ``(None, end)`` when the line
        is still arriving (kept, and refused once longer than ``limit``)."""
        nl = data.find(b"\n", pos, end)
        if nl < 0:
            self._line += data[pos:end]
            self._size += end - pos
            if len(self._line) > limit:
                raise _Fault(self._too_long())
            if self._size > self.max_head:
                raise _Fault(HeaderFieldsTooLarge(f"the request head is larger than {self.max_head} bytes"))
            return None, end
        self._size += nl + 1 - pos
        if self._line:
            line = bytes(self._line) + data[pos:nl]
            self._line.clear()
        else:
            line = data[pos:nl]
        if line[-1:] != b"\r":
            raise _Fault(MalformedRequest("a line ends in a bare LF; HTTP/1.1 lines end in CRLF (RFC 9112 §2.2)"))
        line = line[:-1]
        if b"\r" in line:
            raise _Fault(MalformedRequest("a bare CR inside a line (RFC 9112 §2.2)"))
        if len(line) > limit:
            raise _Fault(self._too_long())
        if self._size > self.max_head:
            raise _Fault(HeaderFieldsTooLarge(f"the request head is larger than {self.max_head} bytes"))
        return line, nl + 1

    def _too_long(self) -> GatewayError:
        if self._state == _CHUNK_SIZE:
            return MalformedRequest(f"a chunk size line is longer than {MAX_FIELD} bytes")
        if self._request is None and self._state == _HEAD:
            return UriTooLong(f"the request line is longer than {MAX_TARGET} bytes")
        return HeaderFieldsTooLarge(f"a header field is longer than {MAX_FIELD} bytes")

    def _head(self, data: bytes, pos: int, end: int) -> int:
        if self._request is None and not self._line and self._size == 0:
            done = self._whole_head(data, pos, data.find(b"\r\n\r\n", pos))
            if done:
                return done
        while pos < end:
            line, pos = self._lines(data, pos, end, MAX_TARGET if self._request is None else MAX_FIELD)
            if line is None:
                return pos
            if self._request is None:
                if line:
                    self._request_line(line)
                # else: an empty line before the request line, which a server SHOULD ignore (RFC 9112 §2.2)
            elif line:
                self._field(line, self._fields)
            else:
                self._head_done()
                return pos
        return pos

    def _whole_head(self, data: bytes, pos: int, cut: int) -> int:
        """Screen a head that arrived whole and plain (the case of nearly every request) in a few scans in C, and
        return the position after it; 0 leaves it to the line-by-line path, which also explains any refusal.
        ``cut``: where the head's empty line starts (``data.find(b"\\r\\n\\r\\n", pos)``)."""
        if cut < 0 or cut + 4 - pos > self._whole_limit:
            return 0
        # Neither pattern admits a CR or LF except as the CRLF ending each line, so a bare CR or LF anywhere fails
        # them.
        m = PLAIN_REQUEST_LINE.match(data, pos, cut + 2)
        if m is None:
            return 0
        method, minor = m.group(1, 2)
        if method != self._last_method:
            if method.decode() not in METHODS:
                return 0
            self._last_method = method
        fields = data[m.end():cut + 2]
        if fields == self._last_fields:
            # The same field block as this connection's previous request, as keep-alive clients send: the same
            # bytes, so the same verdict and the same fields (the screen is a pure function of the bytes).
            if minor == self._last_minor and self._last_after is not None:
                self._state = self._after = self._last_after   # as _head_done and _done leave a bodyless head
                self._messages += 1
                return cut + 4
            watched = self._last_watched
        else:
            if (PLAIN_FIELDS.fullmatch(fields) is None or fields.count(b"\n") > MAX_FIELDS
                    or (self.refuse_underscores and UNDERSCORE_NAME.search(fields))):
                return 0
            watched = {}
            if fields:
                for name, value in WATCHED_LINES.findall(fields.lower()):
                    watched.setdefault(name, []).append(value)
            self._last_fields, self._last_watched = fields, watched
        self._request = (method, (1, int(minor)))
        self._fields = watched
        self._last_after = None   # until this verdict is known
        self._head_done()
        if self._state in _BODYLESS_NEXT:   # no body: the head alone decided what comes next
            self._last_minor, self._last_after = minor, self._state
        return cut + 4

    def _request_line(self, line: bytes) -> None:
        parts = line.split(b" ")
        if len(parts) != 3 or not all(parts):
            raise _Fault(MalformedRequest("the request line must be METHOD SP TARGET SP HTTP-VERSION with single "
                                          "spaces (RFC 9112 §3)"))
        method, target, version = parts
        m = VERSION.fullmatch(version)
        if m is None:
            raise _Fault(MalformedRequest(f"invalid HTTP version {_show(version)}"))
        major, minor = int(m.group(1)), int(m.group(2))
        if (major, minor) not in ((1, 0), (1, 1)):
            raise _Fault(VersionNotSupported(f"HTTP/{major}.{minor} is not spoken here; use HTTP/1.1"))
        if UPPER_METHOD.fullmatch(method) is None:
            raise _Fault(MalformedRequest(f"invalid method {_show(method)}: methods are case-sensitive "
                                          "upper-case tokens (RFC 9110 §9.1)"))
        name = method.decode("ascii")
        if name == "CONNECT":
            raise _Fault(Unimplemented("CONNECT: this gateway is a reverse proxy, not a tunnel (RFC 9110 §9.3.6)"))
        if name not in METHODS:
            raise _Fault(Unimplemented(f"method {name} is not implemented (RFC 9110 §9.1)"))
        if TARGET.fullmatch(target) is None:
            raise _Fault(MalformedRequest("the request target holds a byte that is not visible ASCII: percent-encode "
                                          "it (RFC 9112 §3.2, RFC 3986 §2.1)"))
        self._request = (method, (major, minor))

    def _field(self, line: bytes, fields: dict[bytes, list[bytes]]) -> bytes:
        m = FIELD.fullmatch(line)
        if m is None:
            if line[:1] in (b" ", b"\t"):
                raise _Fault(MalformedRequest("obsolete line folding (RFC 9112 §5.2)"))
            raise _Fault(MalformedRequest(f"invalid header field {_show(line[:64])} (RFC 9110 §5)"))
        self._count += 1
        if self._count > MAX_FIELDS:
            raise _Fault(HeaderFieldsTooLarge(f"more than {MAX_FIELDS} header fields"))
        name = m.group(1)
        if self.refuse_underscores and b"_" in name:
            raise _Fault(MalformedRequest(f"header name {_show(name)} has an underscore (refused by "
                                          "limits.underscores_in_headers)"))
        lname = name.lower()
        if lname in WATCHED:
            fields.setdefault(lname, []).append(m.group(2).strip(b" \t"))
        return lname

    def _head_done(self) -> None:
        assert self._request is not None
        _method, version = self._request
        fields = self._fields
        hosts = fields.get(b"host", ())
        if len(hosts) > 1 or (version == (1, 1) and not hosts):
            raise _Fault(MalformedRequest("an HTTP/1.1 request needs exactly one Host field (RFC 9112 §3.2)"))
        if hosts and not valid_host(hosts[0]):
            raise _Fault(MalformedRequest(f"invalid Host {_show(hosts[0])}: expected host[:port] "
                                          "(RFC 9112 §3.2, RFC 3986 §3.2.2)"))
        chunked, length = self._framing(version, fields)
        connection = fields.get(b"connection")
        tokens = {t.strip(b" \t").lower() for v in connection for t in v.split(b",")} if connection else _NONE
        upgrade = fields.get(b"upgrade")
        if b"upgrade" in tokens and upgrade and upgrade[0].lower() in UPGRADES:
            self._after = _PASS
        elif b"close" in tokens or (version == (1, 0) and b"keep-alive" not in tokens):
            self._after = _CLOSED
        else:
            self._after = _HEAD
        if chunked:
            self._state = _CHUNK_SIZE
            self._new_message()
        elif length:
            self._state, self._left = _LENGTH, length
        else:
            self._done()

    @staticmethod
    def _framing(version: tuple[int, int], fields: dict[bytes, list[bytes]]) -> tuple[bool, int]:
        te = fields.get(b"transfer-encoding")
        cl = fields.get(b"content-length")
        if te is not None:
            if len(te) > 1:
                raise _Fault(MalformedRequest("more than one Transfer-Encoding field"))
            if version == (1, 0):
                raise _Fault(MalformedRequest("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)"))
            if cl is not None:
                raise _Fault(MalformedRequest("both Content-Length and Transfer-Encoding (RFC 9112 §6.3)"))
            codings = [c.strip(b" \t").lower() for c in te[0].split(b",")]
            if not all(TOKEN_RE.fullmatch(c) for c in codings):
                raise _Fault(MalformedRequest(f"invalid Transfer-Encoding {_show(te[0])}"))
            if codings[-1] != b"chunked":
                raise _Fault(MalformedRequest("Transfer-Encoding must end with chunked, else the body has no "
                                              "length (RFC 9112 §6.3)"))
            if codings.count(b"chunked") > 1:
                raise _Fault(MalformedRequest("chunked applied more than once (RFC 9112 §6.1)"))
            if len(codings) > 1:
                raise _Fault(Unimplemented(f"transfer coding {_show(b', '.join(codings[:-1]))} is not "
                                           "implemented; only chunked is (RFC 9112 §6.1)"))
            return True, 0
        if cl is None:
            return False, 0
        if len(cl) > 1 or DIGITS.fullmatch(cl[0]) is None:
            raise _Fault(MalformedRequest(f"invalid Content-Length {_show(b', '.join(cl))} (RFC 9110 §8.6)"))
        return False, int(cl[0])

    def _done(self) -> None:
        self._state = self._after
        self._messages += 1
        self._new_message()

    # -- a chunked body ------------------------------------------------------------------------------------------

    def _chunk_size(self, data: bytes, pos: int, end: int) -> int:
        line, pos = self._lines(data, pos, end, MAX_FIELD)
        if line is None:
            return pos
        m = CHUNK_LINE.fullmatch(line)
        if m is None:
            raise _Fault(MalformedRequest(f"invalid chunk size line {_show(line[:64])} (RFC 9112 §7.1)"))
        size = int(m.group(1), 16)
        if size > MAX_CHUNK:
            raise _Fault(MalformedRequest("chunk size overflow"))
        self._size = 0
        if size:
            self._state, self._left = _CHUNK_DATA, size
        else:
            self._state = _TRAILERS
        return pos

    def _trailers(self, data: bytes, pos: int, end: int) -> int:
        while pos < end:
            line, pos = self._lines(data, pos, end, MAX_FIELD)
            if line is None:
                return pos
            if not line:
                self._done()
                return pos
            trailers: dict[bytes, list[bytes]] = {}
            name = self._field(line, trailers)
            if name in NOT_TRAILERS:
                raise _Fault(MalformedRequest(f"{name.decode()} is not allowed as a trailer field "
                                              "(RFC 9110 §6.5.1)"))
        return pos


class _Fault(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


def _show(raw: bytes) -> str:
    return repr(raw.decode("latin-1"))


class ScreenedParser:
    """aiohttp's request parser behind a ``Screen``: every byte a client sends passes the screen first.

    A refused request is answered like any parse error. Requests that came before it in the same read are still
    handed over (and answered first); a fault inside a body fails that request through its body stream, and the
    connection closes once it is answered."""

    __slots__ = ("_parser", "_screen", "_protocol", "_payload", "_held", "_dead")

    def __init__(self, parser: Any, screen: Screen, protocol: Any) -> None:
        self._parser = parser
        self._screen = screen
        self._protocol = protocol
        self._payload: Any = None     # the body stream of the last request handed over
        self._held: Refused | None = None
        self._dead = False

    def feed_data(self, data: bytes) -> Any:
        if self._held is not None:
            held, self._held = self._held, None
            raise held
        if self._dead:
            return (), False, b""
        try:
            passed = self._screen.feed(data)
        except Refused as refused:
            return self._refuse(refused)
        result = self._parser.feed_data(passed)
        if result[0]:
            self._payload = result[0][-1][1]
        return result

    def _refuse(self, refused: Refused) -> Any:
        self._dead = True
        messages, upgraded, tail = ((), False, b"")
        if refused.before:
            messages, upgraded, tail = self._parser.feed_data(refused.before)
            if messages:
                self._payload = messages[-1][1]
        loop = asyncio.get_running_loop()
        if refused.in_body:
            if self._payload is not None:
                # Reads of the body fail with the refusal; at its end, so the server does not linger reading it.
                self._payload.set_exception(refused.error)
                self._payload.feed_eof()
            # Not now: closing cancels the server's wait for the very request this call hands over.
            loop.call_soon(self._protocol.close)
            return messages, upgraded, tail
        if not messages:
            raise refused
        # The requests before the refused one go to the handler now; the refusal is raised on the next call,
        # which this schedules, so that it is queued (and answered) after them.
        self._held = refused
        loop.call_soon(self._protocol.data_received, b"")
        return messages, upgraded, tail

    def message_consumed(self) -> None:
        # Called for every request: spelled out, as ``__getattr__`` would cost a failed lookup first.
        self._parser.message_consumed()

    def set_upgraded(self, val: bool) -> None:
        self._parser.set_upgraded(val)
        if not val:
            self._screen.resume()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)
