"""gateway.routing's matching, precedence and index: path kinds, restrictions, the precedence ladder, explain,
unreachable, and the index checked against a linear reference over random tables."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing.index import RouteTable
from gateway.routing.matching import MatchSpec, PathMatch
from gateway.routing.precedence import Entry, precedence_key


def route(name: str, kind: str, value: str, *, order: int = 0, methods: Sequence[str] | None = None,
          headers: Mapping[str, str] | None = None, priority: int | None = None) -> Entry:
    spec = MatchSpec(PathMatch.create(kind, value), frozenset(methods) if methods is not None else None,
                     tuple((headers or {}).items()))
    return Entry(name, spec, order, priority, target=f"target:{name}")


def table(*entries: Entry) -> RouteTable:
    # file order = argument order
    numbered = [Entry(e.name, e.match, i, e.priority, e.target) for i, e in enumerate(entries)]
    return RouteTable(numbered, fallback="legacy")


def winner(t: RouteTable, path: str, method: str = "GET", headers: Mapping[str, str] | None = None) -> str | None:
    m = t.match(method, path, headers or {})
    return None if m is None else m.entry.name


# -- path kinds -----------------------------------------------------------------------------------------------


def test_exact() -> None:
    t = table(route("r", "exact", "/api/search"))
    assert winner(t, "/api/search") == "r"
    assert winner(t, "/api/search/") is None
    assert winner(t, "/api/searchX") is None
    assert winner(t, "/api") is None


@pytest.mark.parametrize("value", ["/api/likes", "/api/likes/"])
@pytest.mark.parametrize(("path", "hit"), [
    ("/api/likes", True), ("/api/likes/", True), ("/api/likes/1", True), ("/api/likes/1/x/", True),
    ("/api/likesX", False), ("/api/like", False), ("/api", False), ("/", False), ("/x/api/likes", False),
])
def test_prefix_is_segment_aware(value: str, path: str, hit: bool) -> None:
    t = table(route("likes", "prefix", value))
    assert (winner(t, path) == "likes") is hit


def test_prefix_root_matches_everything() -> None:
    t = table(route("all", "prefix", "/"))
    for path in ["/", "/a", "/a/b/", "/.well-known/x"]:
        assert winner(t, path) == "all"


def test_template_params() -> None:
    t = table(route("reviews", "template", "/api/products/{id}/reviews"))
    m = t.match("GET", "/api/products/17/reviews", {})
    assert m is not None and m.entry.name == "reviews" and dict(m.params) == {"id": "17"}
    assert m.entry.target == "target:reviews"
    # params stay percent-encoded as in the normalised path
    m = t.match("GET", "/api/products/a%20b/reviews", {})
    assert m is not None and m.params["id"] == "a%20b"


@pytest.mark.parametrize("path", [
    "/api/products/1/reviews/",     # trailing slash: a different path
    "/api/products//reviews",       # a parameter is never empty
    "/api/products/reviews",
    "/api/products/1/2/reviews",
    "/api/products/1/reviewsX",
])
def test_template_non_matches(path: str) -> None:
    t = table(route("reviews", "template", "/api/products/{id}/reviews"))
    assert winner(t, path) is None


def test_template_several_params_and_trailing_slash() -> None:
    t = table(route("a", "template", "/{tenant}/items/{item}/"))
    m = t.match("GET", "/acme/items/9/", {})
    assert m is not None and dict(m.params) == {"tenant": "acme", "item": "9"}
    assert winner(t, "/acme/items/9") is None


def test_template_param_at_end() -> None:
    t = table(route("p", "template", "/api/products/{id}"))
    assert winner(t, "/api/products/1") == "p"
    assert winner(t, "/api/products/") is None
    assert winner(t, "/api/products") is None


def test_regex_full_match_and_named_groups() -> None:
    t = table(route("r", "regex", r"/api/v(?P<version>[0-9]+)/.*"))
    m = t.match("GET", "/api/v2/things", {})
    assert m is not None and dict(m.params) == {"version": "2"}
    assert winner(t, "/x/api/v2/things") is None  # fullmatch, not search
    assert winner(t, "/api/vX/things") is None


def test_no_match_returns_none_and_table_keeps_fallback() -> None:
    t = table(route("r", "exact", "/a"))
    assert t.match("GET", "/b", {}) is None
    assert t.fallback == "legacy"
    assert RouteTable([]).match("GET", "/", {}) is None


# -- restrictions ---------------------------------------------------------------------------------------------


def test_methods() -> None:
    t = table(route("r", "prefix", "/api", methods=["GET", "POST"]))
    assert winner(t, "/api", "GET") == "r"
    assert winner(t, "/api", "POST") == "r"
    assert winner(t, "/api", "DELETE") is None
    assert winner(t, "/api", "get") is None  # methods are case-sensitive (RFC 9110 §9.1)


def test_methods_given_in_lower_case_are_upper_cased() -> None:
    assert MatchSpec(PathMatch.create("exact", "/"), frozenset({"get"})).methods == frozenset({"GET"})


def test_headers_names_case_insensitive_values_exact() -> None:
    t = table(route("r", "prefix", "/api", headers={"X-Tenant": "acme"}))
    assert winner(t, "/api", headers={"x-tenant": "acme"}) == "r"
    assert winner(t, "/api", headers={"X-TENANT": "acme"}) == "r"
    assert winner(t, "/api", headers={"x-tenant": "Acme"}) is None
    assert winner(t, "/api", headers={"x-tenant": "acme "}) is None
    assert winner(t, "/api", headers={}) is None


class CaseInsensitiveHeaders(dict):
    """Stands in for aiohttp's CIMultiDictProxy: case-insensitive get, not a plain dict."""

    def get(self, key, default=None):  # type: ignore[no-untyped-def,override]
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


def test_headers_with_case_insensitive_mapping() -> None:
    t = table(route("r", "exact", "/a", headers={"x-tenant": "acme", "x-beta": "1"}))
    assert winner(t, "/a", headers=CaseInsensitiveHeaders({"X-Tenant": "acme", "X-Beta": "1"})) == "r"
    assert winner(t, "/a", headers=CaseInsensitiveHeaders({"X-Tenant": "acme"})) is None


# -- precedence ladder ----------------------------------------------------------------------------------------


def test_exact_beats_template_and_prefix() -> None:
    t = table(route("prefix", "prefix", "/api/products/1"), route("template", "template", "/api/products/{id}"),
              route("exact", "exact", "/api/products/1"))
    assert winner(t, "/api/products/1") == "exact"


def test_longer_literal_wins_across_template_and_prefix() -> None:
    t = table(route("short-prefix", "prefix", "/api"),
              route("template", "template", "/api/products/{id}/reviews"),   # literal length 22
              route("long-prefix", "prefix", "/api/products"))                # literal length 13
    assert winner(t, "/api/products/1/reviews") == "template"
    assert winner(t, "/api/products/1") == "long-prefix"
    assert winner(t, "/api/other") == "short-prefix"


def test_prefix_longer_than_template_wins() -> None:
    t = table(route("template", "template", "/api/{x}/y"),      # literal length 7
              route("prefix", "prefix", "/api/likes"))          # literal length 10
    assert winner(t, "/api/likes/y") == "prefix"


def test_equal_literal_length_template_before_prefix() -> None:
    t = table(route("prefix", "prefix", "/api/a"),           # literal length 6
              route("template", "template", "/api/a/{x}"))   # "/api/a/" literal length 7
    assert winner(t, "/api/a/1") == "template"
    t = table(route("prefix", "prefix", "/api/ab"),          # 7
              route("template", "template", "/api/{x}/"))    # "/api//" = 6
    assert winner(t, "/api/ab/") == "prefix"
    t = table(route("prefix", "prefix", "/api/a/"),          # counts as "/api/a": 6
              route("template", "template", "/api/{x}/c"))   # "/api//c" = 7
    assert winner(t, "/api/a/c") == "template"
    t = table(route("prefix", "prefix", "/ab"),              # 3
              route("template", "template", "/{x}/b"))       # "//b" = 3: tie, template first
    assert winner(t, "/ab/b") == "template"


def test_template_and_prefix_beat_regex() -> None:
    t = table(route("regex", "regex", "/.*"), route("prefix", "prefix", "/api"))
    assert winner(t, "/api/x") == "prefix"
    assert winner(t, "/other") == "regex"


def test_methods_restricted_first() -> None:
    t = table(route("any", "exact", "/a"), route("get", "exact", "/a", methods=["GET"]))
    assert winner(t, "/a", "GET") == "get"
    assert winner(t, "/a", "POST") == "any"


def test_more_header_matches_first() -> None:
    t = table(route("one", "exact", "/a", headers={"x-a": "1"}),
              route("two", "exact", "/a", headers={"x-a": "1", "x-b": "2"}),
              route("none", "exact", "/a"))
    assert winner(t, "/a", headers={"x-a": "1", "x-b": "2"}) == "two"
    assert winner(t, "/a", headers={"x-a": "1"}) == "one"
    assert winner(t, "/a") == "none"


def test_methods_outrank_headers() -> None:
    t = table(route("headers", "exact", "/a", headers={"x-a": "1"}), route("methods", "exact", "/a", methods=["GET"]))
    assert winner(t, "/a", headers={"x-a": "1"}) == "methods"


def test_file_order_breaks_ties() -> None:
    t = table(route("first", "prefix", "/api"), route("second", "prefix", "/api"))
    assert winner(t, "/api/x") == "first"
    t = table(route("first", "regex", "/a.*"), route("second", "regex", "/.*"))
    assert winner(t, "/ab") == "first"


def test_priority_overrides_kind() -> None:
    t = table(route("exact", "exact", "/api/x"), route("catch-all", "prefix", "/", priority=10))
    assert winner(t, "/api/x") == "catch-all"


def test_priority_lifts_regex_above_indexed_routes() -> None:
    t = table(route("exact", "exact", "/api/x"), route("template", "template", "/api/{id}"),
              route("regex", "regex", "/api/x", priority=1))
    assert winner(t, "/api/x") == "regex"
    assert winner(t, "/api/y") == "template"


def test_negative_priority_sinks_below_regex() -> None:
    t = table(route("exact", "exact", "/a", priority=-1), route("regex", "regex", "/.*"))
    assert winner(t, "/a") == "regex"


def test_higher_ranked_route_that_refuses_the_method_lets_the_next_one_win() -> None:
    t = table(route("exact-post", "exact", "/a/1", methods=["POST"]), route("template", "template", "/a/{id}"),
              route("regex", "regex", "/a/.*", priority=5, methods=["PUT"]))
    assert winner(t, "/a/1", "POST") == "exact-post"
    assert winner(t, "/a/1", "GET") == "template"
    assert winner(t, "/a/1", "PUT") == "regex"


def test_template_backtracks_from_literal_to_param_branch() -> None:
    t = table(route("literal", "template", "/a/b/{x}/c"), route("param", "template", "/a/{y}/d"))
    assert winner(t, "/a/b/d") == "param"
    assert winner(t, "/a/b/z/c") == "literal"


def test_precedence_key_and_ordered() -> None:
    entries = [route("regex", "regex", "/.*", order=0), route("prefix", "prefix", "/api", order=1),
               route("exact", "exact", "/api", order=2), route("pinned", "prefix", "/", order=3, priority=1)]
    t = RouteTable(entries)
    assert [e.name for e in t.ordered()] == ["pinned", "exact", "prefix", "regex"]
    assert precedence_key(entries[1]) == (0, 1, -4, 1, 1, 0, 1)


def test_literal_length() -> None:
    assert PathMatch.create("exact", "/api").literal_length == 4
    assert PathMatch.create("prefix", "/api/").literal_length == 4
    assert PathMatch.create("prefix", "/").literal_length == 1
    assert PathMatch.create("template", "/api/products/{id}/reviews").literal_length == len("/api/products//reviews")
    assert PathMatch.create("regex", "/api.*").literal_length == 0


# -- explain --------------------------------------------------------------------------------------------------


def test_explain_lists_every_route_with_reasons() -> None:
    t = table(route("exact", "exact", "/api/products/1", methods=["POST"]),
              route("tenant", "template", "/api/products/{id}", headers={"x-tenant": "acme"}),
              route("template", "template", "/api/products/{id}"),
              route("prefix", "prefix", "/api"),
              route("other", "prefix", "/o"))
    lines = t.explain("GET", "/api/products/1", {"x-tenant": "globex"})
    assert [(c.entry.name, c.reason) for c in lines] == [
        ("exact", "method"), ("tenant", "header"), ("template", "chosen"), ("prefix", "outranked"),
        ("other", "path"),
    ]
    assert "POST" in lines[0].detail
    assert "x-tenant" in lines[1].detail and "globex" in lines[1].detail
    assert lines[2].chosen and lines[2].matched and dict(lines[2].params) == {"id": "1"}
    assert lines[3].matched and not lines[3].chosen
    assert not lines[4].matched
    assert [c.rank for c in lines] == sorted(c.rank for c in lines)
    m = t.match("GET", "/api/products/1", {"x-tenant": "globex"})
    assert m is not None and m.entry.name == "template"
    assert m.why == "template:/api/products/{id}"


def test_explain_without_winner_means_fallback() -> None:
    t = table(route("a", "exact", "/a"))
    [line] = t.explain("GET", "/b", {})
    assert line.reason == "path" and not any(c.chosen for c in t.explain("GET", "/b", {}))


def test_why_mentions_restrictions() -> None:
    t = table(route("r", "exact", "/a", methods=["POST", "GET"], headers={"X-T": "1"}, priority=3))
    m = t.match("GET", "/a", {"x-t": "1"})
    assert m is not None and m.why == "exact:/a methods=GET,POST headers=x-t priority=3"


# -- unreachable ----------------------------------------------------------------------------------------------


def names(pairs: list[tuple[Entry, Entry]]) -> list[tuple[str, str]]:
    return [(hidden.name, by.name) for hidden, by in pairs]


def test_unreachable_duplicate_exact() -> None:
    t = table(route("first", "exact", "/a"), route("second", "exact", "/a"))
    assert names(t.unreachable()) == [("second", "first")]


def test_unreachable_respects_methods_and_headers() -> None:
    # the earlier route is restricted, the later one is not: the later one still gets the other requests
    t = table(route("get", "exact", "/a", methods=["GET"]), route("any", "exact", "/a"))
    assert t.unreachable() == []
    # same methods: hidden
    t = table(route("a", "exact", "/a", methods=["GET", "POST"]), route("b", "exact", "/a", methods=["GET"]))
    assert names(t.unreachable()) == [("b", "a")]
    # header restrictions: an earlier route needing fewer headers covers a later one needing more
    t = table(route("two", "prefix", "/a", headers={"x-a": "1", "x-b": "2"}),
              route("one", "prefix", "/a", headers={"x-a": "1"}))
    assert t.unreachable() == []
    t = table(route("one", "prefix", "/a", headers={"x-a": "1"}, priority=1),
              route("two", "prefix", "/a", headers={"x-a": "1", "x-b": "2"}))
    assert names(t.unreachable()) == [("two", "one")]


def test_unreachable_prefix_covers_prefix_and_template_only_with_priority() -> None:
    t = table(route("api", "prefix", "/api"), route("likes", "prefix", "/api/likes"),
              route("item", "template", "/api/x/{id}"))
    assert t.unreachable() == []  # longer literals rank first
    t = table(route("api", "prefix", "/api", priority=1), route("likes", "prefix", "/api/likes"),
              route("item", "template", "/api/x/{id}"), route("exact", "exact", "/api"),
              route("elsewhere", "prefix", "/apix"))
    assert names(t.unreachable()) == [("exact", "api"), ("likes", "api"), ("item", "api")]


def test_unreachable_template_covers_template_and_exact() -> None:
    t = table(route("wide", "template", "/a/{x}/{y}", priority=1), route("narrow", "template", "/a/b/{z}"),
              route("one", "exact", "/a/b/c"), route("short", "exact", "/a/b"), route("empty-last", "exact", "/a/b/"))
    assert names(t.unreachable()) == [("one", "wide"), ("narrow", "wide")]


def test_unreachable_root_prefix_covers_regex() -> None:
    t = table(route("all", "prefix", "/", priority=1), route("re", "regex", "/x.*"))
    assert names(t.unreachable()) == [("re", "all")]


def test_unreachable_regex_covers_exact() -> None:
    t = table(route("re", "regex", "/a/[0-9]+", priority=1), route("one", "exact", "/a/1"),
              route("word", "exact", "/a/b"))
    assert names(t.unreachable()) == [("one", "re")]


def test_unreachable_is_conservative_about_regex_over_prefix() -> None:
    t = table(route("re", "regex", "/api(/.*)?", priority=1), route("api", "prefix", "/api"))
    assert t.unreachable() == []


# -- validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("glob", "/a", "one of exact, prefix, template, regex"),
    ("exact", "a", "must start with '/'"),
    ("prefix", "api", "must start with '/'"),
    ("template", "api/{id}", "must start with '/'"),
    ("exact", "/a//b", "write '/a/b'"),
    ("exact", "/a/%2e%2e", "normal form"),
    ("exact", "/a%2Fb", "not a valid path"),
    ("prefix", "/%7eapi", "write '/~api'"),
    ("template", "/a/x{id}", "whole segment"),
    ("template", "/a/{id}x", "whole segment"),
    ("template", "/a/{id}/{id}", "appears twice"),
    ("template", "/a/{}", "identifier"),
    ("template", "/a/{1d}", "identifier"),
    ("template", "/a/{my-id}", "identifier"),
    ("template", "/a//{id}", "normal form"),
    ("template", "/a/../{id}", "normal form"),
    ("regex", "/a(", "does not compile"),
    ("exact", "", "non-empty"),
])
def test_invalid_path_matches(kind: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PathMatch.create(kind, value)


def test_match_spec_validation() -> None:
    path = PathMatch.create("exact", "/")
    with pytest.raises(ValueError, match="at least one method"):
        MatchSpec(path, frozenset())
    with pytest.raises(ValueError, match="once"):
        MatchSpec(path, None, (("X-A", "1"), ("x-a", "2")))
    assert MatchSpec(path, None, (("X-A", "1"),)).headers == (("x-a", "1"),)


# -- the index against a linear reference ---------------------------------------------------------------------


def reference_match(entries: Sequence[Entry], method: str, path: str,
                    headers: Mapping[str, str]) -> tuple[str, dict[str, str]] | None:
    """Linear scan in rank order; path matching written independently of the table."""
    for e in sorted(entries, key=precedence_key):
        params = reference_accepts(e, method, path, headers)
        if params is not None:
            return e.name, params
    return None


def reference_accepts(e: Entry, method: str, path: str, headers: Mapping[str, str]) -> dict[str, str] | None:
    params = reference_path(e.match.path, path)
    if params is None or (e.match.methods is not None and method not in e.match.methods):
        return None
    return params if all(headers.get(name) == value for name, value in e.match.headers) else None


def reference_path(pm: PathMatch, path: str) -> dict[str, str] | None:
    if pm.kind == "exact":
        return {} if path == pm.value else None
    if pm.kind == "prefix":
        prefix = pm.value.rstrip("/")
        return {} if prefix == "" or path == prefix or path.startswith(prefix + "/") else None
    if pm.kind == "regex":
        m = re.fullmatch(pm.value, path)
        return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}
    pattern = re.escape(pm.value)
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
    m = re.fullmatch(pattern, path)
    return None if m is None else m.groupdict()


SEGMENTS = ["a", "b", "ab"]
literal_paths = st.lists(st.sampled_from(SEGMENTS), max_size=4).flatmap(
    lambda segs: st.sampled_from(["/" + "/".join(segs), "/" + "/".join(segs) + "/"] if segs else ["/"]))


@st.composite
def templates(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.sampled_from([*SEGMENTS, "{p}"]), min_size=1, max_size=4))
    out = []
    for i, s in enumerate(segs):
        out.append(f"{{p{i}}}" if s == "{p}" else s)
    return "/" + "/".join(out) + draw(st.sampled_from(["", "/"]))


path_matches = st.one_of(
    literal_paths.map(lambda v: PathMatch.create("exact", v)),
    literal_paths.map(lambda v: PathMatch.create("prefix", v)),
    templates().map(lambda v: PathMatch.create("template", v)),
    st.sampled_from(["/a.*", "/(?P<first>[ab]+)/.*", "/.*b/?", "/", "/a/(a|b)"]).map(
        lambda v: PathMatch.create("regex", v)),
)
method_sets = st.one_of(st.none(), st.sets(st.sampled_from(["GET", "POST"]), min_size=1).map(frozenset))
header_sets = st.dictionaries(st.sampled_from(["x-a", "x-b"]), st.sampled_from(["1", "2"]), max_size=2)


@st.composite
def entries(draw: st.DrawFn) -> list[Entry]:
    n = draw(st.integers(min_value=0, max_value=12))
    out = []
    for i in range(n):
        spec = MatchSpec(draw(path_matches), draw(method_sets), tuple(draw(header_sets).items()))
        out.append(Entry(f"r{i}", spec, i, draw(st.sampled_from([None, None, 0, 1, -1]))))
    return out


@settings(max_examples=400)
@given(entries(), st.lists(st.tuples(literal_paths, st.sampled_from(["GET", "POST", "PUT"]), header_sets),
                           min_size=1, max_size=8))
def test_index_agrees_with_linear_reference(es: list[Entry], requests: list[tuple[str, str, dict[str, str]]]) -> None:
    t = RouteTable(es)
    for path, method, headers in requests:
        m = t.match(method, path, headers)
        got = None if m is None else (m.entry.name, dict(m.params))
        assert got == reference_match(es, method, path, headers)
        chosen = [c.entry.name for c in t.explain(method, path, headers) if c.chosen]
        assert chosen == ([] if got is None else [got[0]])


@settings(max_examples=200)
@given(entries(), st.lists(st.tuples(literal_paths, st.sampled_from(["GET", "POST", "PUT"]), header_sets),
                           min_size=1, max_size=8))
def test_unreachable_routes_never_win(es: list[Entry], requests: list[tuple[str, str, dict[str, str]]]) -> None:
    t = RouteTable(es)
    pairs = t.unreachable()
    hidden = {h.name for h, _ in pairs}
    for path, method, headers in requests:
        m = t.match(method, path, headers)
        assert m is None or m.entry.name not in hidden
        for h, by in pairs:
            assert precedence_key(by) < precedence_key(h)
            if reference_accepts(h, method, path, headers) is not None:
                assert reference_accepts(by, method, path, headers) is not None


def test_ten_thousand_routes_still_match_correctly() -> None:
    es: list[Entry] = []
    for i in range(2500):
        es.append(route(f"exact{i}", "exact", f"/svc{i}/ping", order=len(es)))
        es.append(route(f"prefix{i}", "prefix", f"/svc{i}", order=len(es)))
        es.append(route(f"tmpl{i}", "template", f"/svc{i}/items/{{id}}", order=len(es), methods=["GET"]))
        es.append(route(f"tenant{i}", "template", f"/svc{i}/items/{{id}}", order=len(es),
                        headers={"x-tenant": f"t{i}"}))
    es.append(route("catch", "regex", "/zzz/.*", order=len(es)))
    t = RouteTable(es)
    assert len(t.ordered()) == 10_001
    for i in (0, 1, 1234, 2499):
        assert winner(t, f"/svc{i}/ping") == f"exact{i}"
        assert winner(t, f"/svc{i}/other/thing") == f"prefix{i}"
        m = t.match("GET", f"/svc{i}/items/42", {})
        assert m is not None and m.entry.name == f"tmpl{i}" and m.params == {"id": "42"}
        assert winner(t, f"/svc{i}/items/42", "POST", {"x-tenant": f"t{i}"}) == f"tenant{i}"
        assert winner(t, f"/svc{i}/items/42", "POST", {"x-tenant": "other"}) == f"prefix{i}"
    assert winner(t, "/svc2500/ping") is None
    assert winner(t, "/zzz/a") == "catch"
    assert t.unreachable() == []
