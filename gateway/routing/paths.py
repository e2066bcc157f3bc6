"""Request path normalisation.

The gateway chooses a route by the request path and then forwards that same path upstream, so "which route" and
"which resource" must be decided on one spelling. This module turns the raw path from the request line into its
normal form; every other module sees only the normal form. The rule that matters for safety: two spellings a
backend would treat as the same resource have the same normal form, so no spelling can reach a route that its
normal form does not.

Model (RFC 3986 section numbers in brackets)::

    raw target  --split_target-->  raw path, query (query kept byte for byte)
    raw path    --normalize_path-> normal path, or PathError with a stable ``reason``

``normalize_path`` does, in this order:

1. require an absolute path, origin-form ``/...`` (RFC 9112 §3.2.1)            -> ``not_absolute``
2. percent-escapes: decode the unreserved characters ALPHA DIGIT ``-._~`` [§2.3, §6.2.2.2]; keep every
   other escape but with upper-case hex [§6.2.2.1]. Refuse escapes that would change the path's structure
   or smuggle bytes a backend may treat specially: ``%2F`` (``encoded_slash``), ``%5C``
   (``encoded_backslash``), ``%00``-``%1F`` and ``%7F`` (``control_char``); refuse malformed escapes
   (``bad_escape``).
3. raw characters: refuse ``\\`` (``backslash``: some servers read it as ``/``), control characters
   (``control_char``), ``?`` and ``#`` (``query`` / ``fragment``: the caller forgot ``split_target``).
   Other characters that may not appear in a path [§2.1, §3.3], including non-ASCII, are percent-encoded as
   UTF-8 (the URI form of an IRI, RFC 3987 §3.1), so ``/a|b`` and ``/a%7Cb`` are one path.
4. collapse runs of ``/`` into one (a backend that merges slashes would otherwise see a different path).
5. remove dot segments [§5.2.4], after decoding so ``%2e%2e`` counts as ``..``; ``..`` at the root stays at
   the root. A trailing ``/`` is kept when the input had one, and a final ``.`` or ``..`` leaves one (as in
   §5.2.4: ``/a/b/..`` -> ``/a/``).

Escapes of reserved characters (``%3B`` vs ``;``) stay distinct from the raw character, as §6.2.2 requires.

Path parameters. Java servers (Tomcat, Jetty, Spring) remove ``;parameters`` from each segment before routing, so
``/admin;x=1`` is ``/admin`` to them and ``/public/..;/admin`` is ``/public/../admin``, which is ``/admin``. A
gateway that routed on the raw spelling would send those to a route (or the fallback) other than the one their
meaning belongs to. routes.yaml ``limits.path_parameters`` says what to do:

- ``strip`` (the default): a dot segment with parameters (``..;x``, ``.;``) is a dot segment in step 5, so the path
  the backend receives has it resolved; and routes are matched on ``route_path(normal)``, the normal path with
  the parameters of every segment removed. The parameters of other segments are forwarded as sent
  (``;jsessionid=...`` keeps working): a backend that reads ``;`` literally just sees a path of the route that
  was chosen, never one of another route.
- ``refuse``: any ``;`` in the path is refused (``path_parameter``).
- ``keep``: ``;`` is an ordinary character; only for backends that never treat it specially.

Every request pays for this, so the common case is one regex scan: a path with nothing but plain path
characters, no ``//`` and no ``/.`` is already normal and is returned as is.
"""

from __future__ import annotations

import re

__all__ = ["PARAMETER_MODES", "PathError", "is_normal", "normalize_path", "route_path", "split_target"]

PARAMETER_MODES = ("strip", "refuse", "keep")


class PathError(ValueError):
    """A request path that cannot be normalised safely. ``reason`` is a short stable code for logs and metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# pchar minus "%" plus "/" (RFC 3986 §3.3): the characters a path may carry raw.
_PATH_CHARS = r"A-Za-z0-9\-._~!$&'()*+,;=:@/"
# A character that needs rewriting or refusing. Together with "//" and "/." (which finds every dot segment,
# because each segment of an absolute path follows a "/", and also "/.well-known", which then takes the slow
# path) this finds everything that could make a raw path differ from its normal form.
_NEEDS_WORK = re.compile(rf"[^{_PATH_CHARS}]")
# One token to rewrite: an escape (hex group empty when malformed) or a character outside _PATH_CHARS.
_TOKEN = re.compile(rf"%([0-9A-Fa-f]{{2}})?|[^{_PATH_CHARS}%]")

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DOT_SEGMENTS = frozenset({".", ".."})


def split_target(raw_target: str) -> tuple[str, str | None]:
    """Split an origin-form request target into raw path and raw query.

    ``"/a/b?x=1"`` -> ``("/a/b", "x=1")``. The query is returned byte for byte, ``None`` when the target has no
    ``?`` and ``""`` for a bare ``?``, so the upstream request can repeat exactly what the client sent.
    """
    path, sep, query = raw_target.partition("?")
    return path, (query if sep else None)


def normalize_path(raw_path: str, parameters: str = "strip") -> str:
    """Return the normal form of a raw, still percent-encoded request path, or raise :class:`PathError`.
    ``parameters`` is the ``limits.path_parameters`` mode (see the module docstring)."""
    if raw_path[:1] != "/":
        raise PathError("not_absolute", f"request path must start with '/': {raw_path[:64]!r}")
    if parameters == "refuse" and ";" in raw_path:
        raise PathError("path_parameter", "';' in a path: Java servers read it as a parameter that other servers "
                                          "do not (refused by limits.path_parameters)")
    # Separate substring checks: measurably faster than one regex with alternatives.
    if "//" not in raw_path and "/." not in raw_path and _NEEDS_WORK.search(raw_path) is None:
        return raw_path
    return _remove_dot_segments(_TOKEN.sub(_rewrite_token, raw_path), parameters == "strip")


def is_normal(raw_path: str) -> bool:
    """True when ``raw_path`` is valid and already in normal form."""
    try:
        return normalize_path(raw_path) == raw_path
    except PathError:
        return False


def route_path(normal: str) -> str:
    """The normal path as a Java server routes it: every segment's ``;parameters`` removed, and the segments
    emptied by that dropped (``/admin;x=1`` -> ``/admin``, ``/a/;x/b`` -> ``/a/b``). A trailing ``/`` stays."""
    if ";" not in normal:
        return normal
    parts = [segment.partition(";")[0] for segment in normal[1:].split("/")]
    last = parts.pop()
    return "/" + "/".join([*(p for p in parts if p), last])


def _rewrite_token(m: re.Match[str]) -> str:
    token = m.group(0)
    if token[0] != "%":
        return _encode_raw(token)
    if m.group(1) is None:
        # "%G1", "%4": §2.1 requires two hex digits; backends disagree on how to read the rest.
        raise PathError("bad_escape", f"malformed percent-escape {m.string[m.start():m.start() + 3]!r}")
    return _rewrite_escape(m.group(1))


def _rewrite_escape(hex_digits: str) -> str:
    byte = int(hex_digits, 16)
    if byte == 0x2F:
        # %2F is data, not a separator, to us; many backends decode it before routing and would see a
        # different path than the one we matched.
        raise PathError("encoded_slash", "encoded '/' (%2F) is not allowed in a path")
    if byte == 0x5C:
        raise PathError("encoded_backslash", "encoded '\\' (%5C) is not allowed in a path")
    if byte < 0x20 or byte == 0x7F:
        raise PathError("control_char", f"encoded control character %{hex_digits.upper()} in path")
    char = chr(byte)
    if char in _UNRESERVED:
        return char  # §6.2.2.2: an escaped unreserved character is the character itself
    return "%" + hex_digits.upper()  # §6.2.2.1: hex digits of escapes are case-insensitive, upper is normal


def _encode_raw(char: str) -> str:
    if char == "\\":
        raise PathError("backslash", "'\\' is not allowed in a path")
    if char < " " or char == "\x7f":
        raise PathError("control_char", f"control character {char!r} in path")
    if char == "?":
        raise PathError("query", "'?' in path: split the query off first")
    if char == "#":
        raise PathError("fragment", "'#' is not allowed in a request target (RFC 9112 §3.2.1)")
    try:
        # surrogateescape gives back the original bytes of a target that was decoded leniently.
        data = char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise PathError("bad_char", f"character {char!r} cannot be encoded") from exc
    return "".join(f"%{b:02X}" for b in data)


def _remove_dot_segments(path: str, parameters: bool = False) -> str:
    """Collapse empty segments, then remove "." and ".." (RFC 3986 §5.2.4), never above the root. With
    ``parameters``, a segment is a dot segment by its part before ';' (``..;x`` is ``..``), as Java servers read it."""
    segments = path.split("/")[1:]
    if parameters and ";" in path:
        segments = [_dot(segment) for segment in segments]
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    if not out:
        return "/"
    last = segments[-1]
    trailing = "/" if last == "" or last in _DOT_SEGMENTS else ""
    return "/" + "/".join(out) + trailing


def _dot(segment: str) -> str:
    name = segment.partition(";")[0]
    return name if name in _DOT_SEGMENTS else segment
