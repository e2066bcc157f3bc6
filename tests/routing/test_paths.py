"""gateway.paths: request path normalisation, rule by rule, plus properties over random spellings."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.routing.paths import PathError, is_normal, normalize_path, route_path, split_target

# -- split_target ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a/b?x=1", ("/a/b", "x=1")),
        ("/a/b", ("/a/b", None)),
        ("/a/b?", ("/a/b", "")),
        ("/a?x=%2F&y=a?b", ("/a", "x=%2F&y=a?b")),  # only the first "?" splits; the query is untouched
        ("/?q= spaced ", ("/", "q= spaced ")),
    ],
)
def test_split_target(target: str, expected: tuple[str, str | None]) -> None:
    assert split_target(target) == expected


# -- normalisation rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/a", "/a/b", "/a/b/", "/api/products/17/reviews", "/a-b_c~d.e",
                                  "/x;y=1,z:@!$&'()*+", "/%C3%A9", "/%20"])
def test_normal_paths_are_returned_unchanged(path: str) -> None:
    assert normalize_path(path) == path
    assert is_normal(path)


def test_fast_path_returns_the_same_object() -> None:
    path = "/api/products/17/reviews"
    assert normalize_path(path) is path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        # §6.2.2.2: escaped unreserved characters are the characters themselves
        ("/%41%42%43", "/ABC"),
        ("/%61%7a%30%39", "/az09"),
        ("/%2D%2e%5F%7E", "/-._~"),
        # §6.2.2.1: other escapes stay, with upper-case hex
        ("/a%3bb", "/a%3Bb"),
        ("/%c3%a9", "/%C3%A9"),
        ("/%25", "/%25"),
        ("/%252e", "/%252e"),  # an escaped "%" is data: never decoded twice
        # characters outside the path grammar are encoded, so both spellings are one path (§2.1, RFC 3987 §3.1)
        ("/a b", "/a%20b"),
        ("/a|b", "/a%7Cb"),
        ("/é", "/%C3%A9"),
        ("/{x}", "/%7Bx%7D"),
    ],
)
def test_escapes(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("//", "/"),
        ("///a", "/a"),
        ("/a//b", "/a/b"),
        ("/a///b//", "/a/b/"),
    ],
)
def test_slash_runs_collapse(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),          # §5.2.4: a final ".." leaves the trailing "/"
        ("/a/b/.", "/a/b/"),
        ("/.", "/"),
        ("/..", "/"),
        ("/../../a", "/a"),          # never above the root
        ("/a/../../b", "/b"),
        ("/%2e%2e/a", "/a"),         # decoded first, so escaped dots count
        ("/a/%2E%2e/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("/a/.%2E", "/"),
        ("/a//../b", "/b"),          # slashes collapse first: ".." removes "a", not an empty segment
        # not dot segments
        ("/a/.b", "/a/.b"),
        ("/a/..b/c.", "/a/..b/c."),
        ("/a/...", "/a/..."),
        ("/.well-known/x", "/.well-known/x"),
    ],
)
def test_dot_segments(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(("raw", "normal"), [("/a/b/", "/a/b/"), ("/a/b//", "/a/b/"), ("/a/b", "/a/b"),
                                             ("/a/b/%2e%2e", "/a/"), ("/a/b/../", "/a/")])
def test_trailing_slash_is_kept(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "not_absolute"),
        ("a/b", "not_absolute"),
        ("*", "not_absolute"),
        ("http://host/a", "not_absolute"),
        ("/a%2Fb", "encoded_slash"),
        ("/a%2fb", "encoded_slash"),
        ("/a%5Cb", "encoded_backslash"),
        ("/a%5cb", "encoded_backslash"),
        ("/a\\b", "backslash"),
        ("/a%00", "control_char"),
        ("/a%0d%0aX", "control_char"),
        ("/a%7F", "control_char"),
        ("/a\x00", "control_char"),
        ("/a\tb", "control_char"),
        ("/a\x7f", "control_char"),
        ("/%G1", "bad_escape"),
        ("/%4", "bad_escape"),
        ("/a%", "bad_escape"),
        ("/a%%41", "bad_escape"),
        ("/a?b", "query"),
        ("/a#b", "fragment"),
        ("/\ud800", "bad_char"),
    ],
)
def test_refusals(raw: str, reason: str) -> None:
    with pytest.raises(PathError) as info:
        normalize_path(raw)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)
    assert not is_normal(raw)


def test_refusal_precedes_dot_removal() -> None:
    # "/a/%2F/../b" must not become "/a/b": the encoded slash is refused before segments are looked at.
    with pytest.raises(PathError):
        normalize_path("/a/%2F/../b")


@pytest.mark.parametrize("path", ["/a/./b", "/a//b", "/%61", "/a%3b", "/.well-known"])
def test_is_normal(path: str) -> None:
    assert is_normal(normalize_path(path))
    assert is_normal(path) == (normalize_path(path) == path)


# -- properties -----------------------------------------------------------------------------------------------

_PIECES = ["/", ".", "%2e", "%2E", "%41", "%7e", "%3b", "%3B", "a", "b", "//", "..", "~"]
raw_paths = st.lists(st.sampled_from(_PIECES), max_size=14).map(lambda ps: "/" + "".join(ps))

_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|4[1-9a-fA-F]|5[0-9aA]|5[fF]|6[1-9a-fA-F]|7[0-9aA]|7[eE]|3[0-9])")


def _decode_unreserved(path: str) -> str:
    return _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)


@given(raw_paths)
@example("/%2e%2e/%2E./a/.%2e/")
@example("/a/..%2e")
def test_normal_form_properties(raw: str) -> None:
    normal = normalize_path(raw)
    assert normal.startswith("/")
    assert normalize_path(normal) == normal          # idempotent
    assert is_normal(normal)
    assert "//" not in normal
    segments = normal[1:].split("/")
    assert "." not in segments and ".." not in segments   # no dot segments, so nothing climbs above the root
    assert "" not in segments[:-1]                   # only a trailing "/" leaves an empty segment
    assert not re.search(r"%(2[eE]|4[1-9A-Fa-f]|7[eE]|[0-9a-f][a-f]|[a-f][0-9a-f])", normal)  # escapes are canonical


@given(raw_paths)
def test_decoding_unreserved_escapes_first_changes_nothing(raw: str) -> None:
    # Any spelling of the same path, escaped or not, has one normal form: no spelling reaches a different route.
    assert normalize_path(_decode_unreserved(raw)) == normalize_path(raw)


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20))
def test_arbitrary_text_normalises_or_is_refused(text: str) -> None:
    raw = "/" + text
    try:
        normal = normalize_path(raw)
    except PathError as exc:
        assert exc.reason
        return
    assert normal.isascii()
    assert normalize_path(normal) == normal


# -- ';' path parameters (limits.path_parameters) -------------------------------------------------------------


@pytest.mark.parametrize(("raw", "normal", "routed"), [
    ("/admin;x=1", "/admin;x=1", "/admin"),
    ("/admin;jsessionid=AB12/orders", "/admin;jsessionid=AB12/orders", "/admin/orders"),
    ("/public/..;/admin", "/admin", "/admin"),
    ("/public/..;x=1/admin", "/admin", "/admin"),
    ("/public/%2e%2e;/admin", "/admin", "/admin"),
    ("/a/.;x/b", "/a/b", "/a/b"),
    ("/a/;x/b", "/a/;x/b", "/a/b"),
    ("/a/b;x/", "/a/b;x/", "/a/b/"),
    ("/;x", "/;x", "/"),
    ("/a%3Bx", "/a%3Bx", "/a%3Bx"),      # an escaped ';' is data, not a delimiter (RFC 3986 §2.2)
])
def test_parameters_stripped_for_routing(raw: str, normal: str, routed: str) -> None:
    assert normalize_path(raw) == normal
    assert normalize_path(raw, "strip") == normal
    assert route_path(normal) == routed


def test_parameters_kept_as_ordinary_characters() -> None:
    assert normalize_path("/public/..;/admin", "keep") == "/public/..;/admin"
    assert normalize_path("/a/.;x/b", "keep") == "/a/.;x/b"


@pytest.mark.parametrize("raw", ["/admin;x=1", "/public/..;/admin", "/;"])
def test_parameters_refused(raw: str) -> None:
    with pytest.raises(PathError) as info:
        normalize_path(raw, "refuse")
    assert info.value.reason == "path_parameter"
    assert normalize_path("/a%3Bx", "refuse") == "/a%3Bx"


def _as_java_routes(raw: str) -> str:
    """The path a servlet container routes: unreserved escapes decoded, every segment's parameters removed, then
    empty and dot segments removed (Tomcat's order)."""
    segments = [s.partition(";")[0] for s in _decode_unreserved(raw)[1:].split("/")]
    return normalize_path("/" + "/".join(segments), "keep")


@given(st.lists(st.sampled_from([*_PIECES, ";", ";x=1", "..;", ".;"]), max_size=14).map(lambda ps: "/" + "".join(ps)))
@example("/a/..;/b")
@example("/;x=1/..;/a")
@example("/a/;x/../b")
def test_a_java_backend_reads_the_forwarded_path_as_it_was_routed(raw: str) -> None:
    forwarded = normalize_path(raw)
    assert _as_java_routes(forwarded) == route_path(forwarded)
