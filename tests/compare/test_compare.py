"""Tests for gateway.compare: a pure package, tested as pure functions."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.compare.answers import compare, noisy_fields
from gateway.compare.bodies import MAX_DECOMPRESSED
from gateway.compare.rules import Captured, CompareRules, RuleError, compile_rules
from gateway.compare.verdict import Comparison, Difference

JSON = (("Content-Type", "application/json"),)
PLAIN = compile_rules()


def js(doc: Any, *, status: int = 200, headers: tuple[tuple[str, str], ...] = JSON) -> Captured:
    return Captured(status, headers, json.dumps(doc).encode())


def raw(body: bytes, content_type: str | None = None, *, status: int = 200, truncated: bool = False,
        extra: tuple[tuple[str, str], ...] = ()) -> Captured:
    headers = ((("Content-Type", content_type),) if content_type else ()) + extra
    return Captured(status, headers, body, truncated)


def cmp(a: Captured, b: Captured, rules: CompareRules = PLAIN, noise: tuple[str, ...] = ()) -> Comparison:
    return compare(a, b, rules, noise)


def kinds(result: Comparison) -> list[tuple[str, str]]:
    return [(d.path, d.kind) for d in result.differences]


# ------------------------------------------------------------------------------------------------------ status

def test_identical_responses_match() -> None:
    result = cmp(js({"a": 1}), js({"a": 1}))
    assert result == Comparison("match", (), ())


def test_status_is_compared() -> None:
    result = cmp(js({"a": 1}), js({"a": 1}, status=404))
    assert result.verdict == "mismatch"
    assert result.differences == (Difference("status", "status", "changed", 200, 404),)


# ----------------------------------------------------------------------------------------------------- headers

def test_default_noise_headers_are_not_compared() -> None:
    legacy = js({}, headers=JSON + (("Date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Server", "legacy/1"),
                                   ("X-Served-By", "legacy"), ("X-Trace-Id", "a" * 32),
                                   ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
                                   ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "5"),
                                   ("Proxy-Status", "x"), ("Transfer-Encoding", "chunked")))
    shadow = js({}, headers=JSON + (("date", "Tue, 02 Jan 2024 00:00:00 GMT"), ("server", "new/2"),
                                   ("x-served-by", "reviews"), ("x-trace-id", "c" * 32), ("X-Hop", "2")))
    assert cmp(legacy, shadow).verdict == "match"


def test_header_names_are_case_insensitive_and_values_compared() -> None:
    legacy = js({}, headers=JSON + (("Cache-Control", "max-age=60"),))
    assert cmp(legacy, js({}, headers=JSON + (("cache-control", "max-age=60"),))).verdict == "match"
    result = cmp(legacy, js({}, headers=JSON + (("CACHE-CONTROL", "no-store"),)))
    assert result.differences == (
        Difference("header:cache-control", "header:cache-control", "changed", "max-age=60", "no-store"),)


def test_missing_and_extra_headers() -> None:
    result = cmp(js({}, headers=JSON + (("X-A", "1"),)), js({}, headers=JSON + (("X-B", "2"),)))
    assert kinds(result) == [("header:x-a", "missing"), ("header:x-b", "extra")]


def test_repeated_headers_equal_their_comma_joined_form() -> None:
    legacy = js({}, headers=JSON + (("Allow", "GET"), ("Allow", "POST")))
    assert cmp(legacy, js({}, headers=JSON + (("Allow", "GET, POST"),))).verdict == "match"


def test_content_type_compared_by_media_type_and_charset() -> None:
    legacy = js({}, headers=(("Content-Type", "application/json"),))
    utf8 = js({}, headers=(("content-type", "Application/JSON; charset=UTF-8"),))
    latin = js({}, headers=(("Content-Type", "application/json; charset=iso-8859-1"),))
    html = js({}, headers=(("Content-Type", "text/html"),))
    assert cmp(legacy, utf8).verdict == "match"     # JSON without charset is UTF-8
    assert kinds(cmp(legacy, latin)) == [("header:content-type", "changed")]
    assert ("header:content-type", "changed") in kinds(cmp(legacy, html))


def test_set_cookie_compared_by_names_and_values_never_shown() -> None:
    legacy = js({}, headers=JSON + (("Set-Cookie", "sid=secret1; Path=/"), ("Set-Cookie", "theme=dark")))
    same_names = js({}, headers=JSON + (("Set-Cookie", "theme=light"), ("Set-Cookie", "sid=secret2; HttpOnly")))
    other = js({}, headers=JSON + (("Set-Cookie", "session=secret3"),))
    assert cmp(legacy, same_names).verdict == "match"
    (diff,) = cmp(legacy, other).differences
    assert (diff.path, diff.legacy, diff.shadow) == ("header:set-cookie", ["sid", "theme"], ["session"])
    assert "secret" not in repr(diff)


def test_vary_is_order_insensitive() -> None:
    legacy = js({}, headers=JSON + (("Vary", "Accept, Accept-Encoding"),))
    assert cmp(legacy, js({}, headers=JSON + (("Vary", "accept-encoding,accept"),))).verdict == "match"
    assert cmp(legacy, js({}, headers=JSON + (("Vary", "Accept"),))).verdict == "mismatch"


def test_header_ignore_rules_move_differences_to_ignored() -> None:
    rules = compile_rules(ignore=["header:X-Request-Id", "header:X-Debug-*"], headers_ignore=["X-Cache"])
    legacy = js({}, headers=JSON + (("X-Request-Id", "1"), ("X-Debug-Time", "3ms"), ("X-Cache", "HIT")))
    shadow = js({}, headers=JSON + (("x-request-id", "2"), ("X-Debug-Time", "9ms"), ("X-Cache", "MISS")))
    result = cmp(legacy, shadow, rules)
    assert result.verdict == "ignored"
    assert {d.path for d in result.ignored} == {"header:x-request-id", "header:x-debug-time", "header:x-cache"}
    assert cmp(legacy, shadow).verdict == "mismatch"


def test_headers_compare_off() -> None:
    rules = compile_rules(headers_compare=False)
    legacy = js({"a": 1}, headers=JSON + (("X-A", "1"),))
    assert cmp(legacy, js({"a": 1}, headers=JSON + (("X-A", "2"),)), rules).verdict == "match"
    assert cmp(legacy, js({"a": 2}, headers=JSON), rules).verdict == "mismatch"


def test_body_length_headers_ignored_only_when_bodies_compared_semantically() -> None:
    legacy = Captured(200, JSON + (("Content-Length", "8"), ("ETag", '"a"')), b'{"a": 1}')
    shadow = Captured(200, JSON + (("Content-Length", "6"), ("ETag", '"b"')), b'{"a":1}')
    assert cmp(legacy, shadow).verdict == "match"
    binary = (("Content-Type", "application/octet-stream"),)
    result = cmp(Captured(200, binary + (("Content-Length", "1"),), b"x"),
                 Captured(200, binary + (("Content-Length", "2"),), b"yz"))
    assert {d.path for d in result.differences} == {"header:content-length", "body"}


# -------------------------------------------------------------------------------------------------------- JSON

def test_json_key_order_and_whitespace_do_not_matter() -> None:
    legacy = raw(b'{"a": 1, "b": {"c": [1, 2], "d": null}}', "application/json")
    shadow = raw(b'{"b":{"d":null,"c":[1,2]},"a":1}', "application/json")
    assert cmp(legacy, shadow).verdict == "match"


def test_json_nested_difference_has_concrete_path_and_collapsed_field() -> None:
    legacy = js({"items": [{"id": 1, "review": {"rating": 4}}, {"id": 2, "review": {"rating": 5}}]})
    shadow = js({"items": [{"id": 1, "review": {"rating": 4}}, {"id": 2, "review": {"rating": 3}}]})
    assert cmp(legacy, shadow).differences == (
        Difference("$.items[1].review.rating", "$.items[*].review.rating", "changed", 5, 3),)


def test_json_missing_and_extra_keys() -> None:
    result = cmp(js({"a": 1, "b": 2}), js({"a": 1, "c": 3}))
    assert result.differences == (Difference("$.b", "$.b", "missing", 2, None),
                                  Difference("$.c", "$.c", "extra", None, 3))


@pytest.mark.parametrize(("left", "right"), [(1, "1"), (True, 1), (0, False), (None, 0), ([], {}), ("", None)])
def test_json_type_changes(left: Any, right: Any) -> None:
    result = cmp(js({"v": left}), js({"v": right}))
    assert result.differences == (Difference("$.v", "$.v", "type", left, right),)


def test_int_and_float_are_equal_numbers() -> None:
    assert cmp(js({"n": 1, "m": [2]}), js({"n": 1.0, "m": [2.0]})).verdict == "match"
    assert cmp(js({"n": 1}), js({"n": 1.5})).verdict == "mismatch"


def test_numeric_tolerance_is_absolute() -> None:
    rules = compile_rules(tolerance=0.001)
    assert cmp(js({"price": 9.99}), js({"price": 9.9905}), rules).verdict == "match"
    assert cmp(js({"price": 10}), js({"price": 10.0009}), rules).verdict == "match"
    assert kinds(cmp(js({"price": 9.99}), js({"price": 9.992}), rules)) == [("$.price", "changed")]
    assert cmp(js({"price": 9.99}), js({"price": 9.9905})).verdict == "mismatch"
    huge = 10 ** 400   # too large for a float: must not crash the tolerance check
    assert cmp(js({"n": huge}), js({"n": 1.5}), rules).verdict == "mismatch"


def test_nan_equals_nan_and_differs_from_numbers() -> None:
    assert cmp(raw(b'{"a": NaN}', "application/json"), raw(b'{"a":NaN}', "application/json")).verdict == "match"
    assert kinds(cmp(raw(b'{"a": NaN}', "application/json"), js({"a": 1}))) == [("$.a", "changed")]


def test_nesting_too_deep_to_walk_falls_back_to_bytes() -> None:
    deep = raw(b"[" * 5_000 + b"1" + b"]" * 5_000, "application/json")
    other = raw(b"[" * 5_000 + b"2" + b"]" * 5_000, "application/json")
    assert cmp(deep, deep).verdict == "match"
    assert cmp(deep, other).verdict == "mismatch"


def test_problem_json_is_json() -> None:
    problem = (("Content-Type", "application/problem+json"),)
    legacy = raw(b'{"title": "Not Found", "status": 404}', "application/problem+json")
    shadow = Captured(200, problem, b'{"status":404,"title":"Not Found"}')
    assert cmp(legacy, shadow).verdict == "match"


def test_odd_keys_are_quoted_in_paths() -> None:
    result = cmp(js({"a b": {"x.y": 1, "it's": 1, "7": 1}}), js({"a b": {"x.y": 2, "it's": 2, "7": 2}}))
    assert [d.path for d in result.differences] == ["$['a b']['x.y']", "$['a b']['it\\'s']", "$['a b']['7']"]


def test_arrays_of_different_length_report_per_index() -> None:
    assert kinds(cmp(js([1, 2, 3, 4]), js([1, 2]))) == [("$[2]", "missing"), ("$[3]", "missing")]
    assert cmp(js({"a": [1]}), js({"a": [1, 5]})).differences == (
        Difference("$.a[1]", "$.a[*]", "extra", None, 5),)


def test_long_strings_are_cut_in_differences() -> None:
    (diff,) = cmp(js({"t": "x" * 5000}), js({"t": "y" * 5000})).differences
    assert isinstance(diff.legacy, str) and 200 <= len(diff.legacy) < 210
    assert diff.legacy.startswith("xxx")


def test_differences_are_capped_with_an_omitted_count() -> None:
    rules = compile_rules(max_differences=10)
    result = cmp(js(list(range(100))), js([-1] * 100), rules)
    assert len(result.differences) == 11
    assert result.differences[-1] == Difference("body", "body", "omitted", 90, None)


# ---------------------------------------------------------------------------------------------------- ignore

def test_ignore_wildcard_path() -> None:
    rules = compile_rules(ignore=["$.items[*].created_at"])
    legacy = js({"items": [{"id": 1, "created_at": "2024-01-01"}, {"id": 2, "created_at": "2024-01-02"}]})
    shadow = js({"items": [{"id": 1, "created_at": "2024-01-01T00:00Z"}, {"id": 2}]})
    result = cmp(legacy, shadow, rules)
    assert result.verdict == "ignored"
    assert [(d.path, d.field, d.kind) for d in result.ignored] == [
        ("$.items[0].created_at", "$.items[*].created_at", "changed"),
        ("$.items[1].created_at", "$.items[*].created_at", "missing")]
    assert cmp(legacy, shadow).verdict == "mismatch"


def test_ignore_subtree_and_index_and_quoted_key() -> None:
    rules = compile_rules(ignore=["$.meta", "$.a.b[0]", "$['odd key']"])
    legacy = js({"meta": {"t": 1, "deep": [1]}, "a": {"b": [1, 2]}, "odd key": 1})
    shadow = js({"meta": {"t": 2}, "a": {"b": [9, 2]}, "odd key": 2})
    assert cmp(legacy, shadow, rules).verdict == "ignored"
    # Only index 0 is ignored: index 1 still counts.
    assert kinds(cmp(legacy, js({"meta": {}, "a": {"b": [9, 3]}, "odd key": 1}), rules)) == [("$.a.b[1]", "changed")]


def test_ignore_recursive_descent_at_any_depth() -> None:
    rules = compile_rules(ignore=["$..generated_at"])
    legacy = js({"generated_at": 1, "x": {"generated_at": 1, "y": [{"generated_at": 1, "v": 1}]}})
    shadow = js({"generated_at": 2, "x": {"generated_at": 2, "y": [{"generated_at": 2, "v": 1}]}})
    result = cmp(legacy, shadow, rules)
    assert result.verdict == "ignored"
    assert {d.path for d in result.ignored} == {"$.generated_at", "$.x.generated_at", "$.x.y[0].generated_at"}
    changed = js({"generated_at": 2, "x": {"generated_at": 2, "y": [{"generated_at": 2, "v": 2}]}})
    assert kinds(cmp(legacy, changed, rules)) == [("$.x.y[0].v", "changed")]


def test_ignore_member_wildcard_and_whole_document() -> None:
    assert cmp(js({"a": {"x": 1}, "b": 2}), js({"a": {"x": 3}, "b": 4}), compile_rules(ignore=["$.*"])).verdict \
        == "ignored"
    assert cmp(js([1]), js({"a": 1}), compile_rules(ignore=["$"])).verdict == "ignored"


# ------------------------------------------------------------------------------------------------- unordered

def test_unordered_multiset_ignores_order() -> None:
    rules = compile_rules(unordered=["$.items"])
    legacy = js({"items": [{"id": 1}, {"id": 2}, {"id": 3}]})
    shadow = js({"items": [{"id": 3}, {"id": 1}, {"id": 2}]})
    assert cmp(legacy, shadow, rules).verdict == "match"
    assert cmp(legacy, shadow).verdict == "mismatch"


def test_unordered_multiset_reports_unmatched_as_missing_and_extra() -> None:
    rules = compile_rules(unordered=["$.items"])
    result = cmp(js({"items": [1, 1, 2, 3]}), js({"items": [3, 2, 2, 1]}), rules)
    assert result.differences == (Difference("$.items[1]", "$.items[*]", "missing", 1, None),
                                  Difference("$.items[2]", "$.items[*]", "extra", None, 2))


def test_unordered_distinguishes_booleans_from_numbers() -> None:
    rules = compile_rules(unordered=["$"])
    assert cmp(js([True, 1]), js([1, True]), rules).verdict == "match"
    assert cmp(js([True]), js([1]), rules).verdict == "mismatch"
    assert cmp(js([1]), js([1.0]), rules).verdict == "match"


def test_unordered_with_ignored_fields_inside_elements() -> None:
    rules = compile_rules(unordered=["$.items"], ignore=["$.items[*].created_at"])
    legacy = js({"items": [{"id": 1, "created_at": "a"}, {"id": 2, "created_at": "b"}]})
    shadow = js({"items": [{"id": 2, "created_at": "x"}, {"id": 1, "created_at": "y"}]})
    result = cmp(legacy, shadow, rules)
    assert result.verdict == "ignored"
    assert {(d.path, d.legacy, d.shadow) for d in result.ignored} == {
        ("$.items[0].created_at", "a", "y"), ("$.items[1].created_at", "b", "x")}


def test_nested_unordered_arrays() -> None:
    rules = compile_rules(unordered=["$.items", "$.items[*].tags"])
    legacy = js({"items": [{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": ["c", "d"]}]})
    shadow = js({"items": [{"id": 2, "tags": ["d", "c"]}, {"id": 1, "tags": ["b", "a"]}]})
    assert cmp(legacy, shadow, rules).verdict == "match"
    assert cmp(legacy, shadow, compile_rules(unordered=["$.items"])).verdict == "mismatch"


def test_unordered_by_key_compares_matched_elements_field_by_field() -> None:
    rules = compile_rules(unordered=[{"path": "$.items", "by": "id"}])
    legacy = js({"items": [{"id": 1, "r": 5}, {"id": 2, "r": 4}, {"id": 3, "r": 1}]})
    shadow = js({"items": [{"id": 4, "r": 2}, {"id": 2, "r": 3}, {"id": 1, "r": 5}]})
    assert cmp(legacy, shadow, rules).differences == (
        Difference("$.items[1].r", "$.items[*].r", "changed", 4, 3),
        Difference("$.items[2]", "$.items[*]", "missing", {"id": 3, "r": 1}, None),
        Difference("$.items[0]", "$.items[*]", "extra", None, {"id": 4, "r": 2}),
    )


def test_unordered_by_key_matches_int_and_float_keys_and_handles_keyless_elements() -> None:
    rules = compile_rules(unordered=[{"path": "$", "by": "id"}])
    assert cmp(js([{"id": 1}, "x", {"id": 2}]), js([{"id": 2.0}, {"id": 1}, "x"]), rules).verdict == "match"
    assert kinds(cmp(js([{"id": 1}, "x"]), js([{"id": 1}, "y"]), rules)) == [("$[1]", "missing"), ("$[1]", "extra")]


def test_unordered_with_tolerance_pairs_nearly_equal_elements() -> None:
    rules = compile_rules(unordered=["$.prices"], tolerance=0.01)
    legacy = js({"prices": [{"sku": "a", "p": 1.0}, {"sku": "b", "p": 2.0}, {"sku": "c", "p": 3.0}]})
    shadow = js({"prices": [{"sku": "c", "p": 3.004}, {"sku": "a", "p": 0.999}, {"sku": "b", "p": 2.0}]})
    assert cmp(legacy, shadow, rules).verdict == "match"
    far = js({"prices": [{"sku": "c", "p": 3.5}, {"sku": "a", "p": 0.999}, {"sku": "b", "p": 2.0}]})
    assert kinds(cmp(legacy, far, rules)) == [("$.prices[2]", "missing"), ("$.prices[0]", "extra")]


# ---------------------------------------------------------------------------------------------- big documents

def big_items(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"product {i}", "price": i * 1.25, "tags": ["a", "b"]} for i in range(n)]


def test_big_array_single_change() -> None:
    legacy, changed = big_items(10_000), big_items(10_000)
    changed[7_777]["price"] = 0
    result = cmp(js({"items": legacy}), js({"items": changed}))
    assert result.differences == (
        Difference("$.items[7777].price", "$.items[*].price", "changed", 7_777 * 1.25, 0),)


def test_big_unordered_arrays_shuffled_match() -> None:
    legacy = big_items(10_000)
    shuffled = legacy[:]
    random.Random(7).shuffle(shuffled)
    rules = compile_rules(unordered=["$.items"], ignore=["$..name"])
    assert cmp(js({"items": legacy}), js({"items": shuffled}), rules).verdict == "match"
    by_id = compile_rules(unordered=[{"path": "$.items", "by": "id"}])
    assert cmp(js({"items": legacy}), js({"items": shuffled}), by_id).verdict == "match"
    shuffled.pop()
    assert len(cmp(js({"items": legacy}), js({"items": shuffled}), rules).differences) == 1


def test_big_arrays_of_different_length() -> None:
    result = cmp(js(big_items(10_000)), js(big_items(9_000)))
    assert result.verdict == "mismatch"
    assert result.differences[0] == Difference("$[9000]", "$[*]", "missing", big_items(9_001)[-1], None)
    assert result.differences[-1] == Difference("body", "body", "omitted", 900, None)


# ------------------------------------------------------------------------------------------ text and binary

def test_text_compared_by_lines() -> None:
    legacy = raw(b"<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n", "text/html; charset=utf-8")
    shadow = raw(b"<ul>\n<li>a</li>\n<li>B</li>\n</ul>\n<!-- x -->\n", "text/html; charset=utf-8")
    assert cmp(legacy, shadow).differences == (
        Difference("body:line:3", "body:line:*", "changed", "<li>b</li>", "<li>B</li>"),
        Difference("body:line:5", "body:line:*", "extra", None, "<!-- x -->"),
    )


def test_text_reports_the_first_few_lines_and_counts_the_rest() -> None:
    legacy = raw("\n".join(f"line {i}" for i in range(20)).encode(), "text/plain")
    shadow = raw("\n".join(f"LINE {i}" for i in range(20)).encode(), "text/plain")
    result = cmp(legacy, shadow)
    assert [d.path for d in result.differences] == [f"body:line:{n}" for n in range(1, 6)] + ["body"]
    assert result.differences[-1].kind == "omitted" and result.differences[-1].legacy == 15


def test_text_line_endings_only_are_ignored() -> None:
    result = cmp(raw(b"a\r\nb\r\n", "text/csv"), raw(b"a\nb", "text/csv"))
    assert result.verdict == "ignored"
    assert [d.kind for d in result.ignored] == ["line_endings"]


def test_xml_and_form_are_text() -> None:
    xml = cmp(raw(b"<a>\n<b>1</b>\n</a>", "application/soap+xml"), raw(b"<a>\n<b>2</b>\n</a>", "application/xml"))
    assert [d.path for d in xml.differences if d.path.startswith("body")] == ["body:line:2"]
    form = cmp(raw(b"a=1&b=2", "application/x-www-form-urlencoded"),
               raw(b"a=1&b=3", "application/x-www-form-urlencoded"))
    assert kinds(form) == [("body:line:1", "changed")]


def test_binary_compared_by_length_and_hash() -> None:
    assert cmp(raw(b"\x89PNG\x00\x01", "image/png"), raw(b"\x89PNG\x00\x01", "image/png")).verdict == "match"
    (diff,) = cmp(raw(b"\x89PNG\x00\x01", "image/png"), raw(b"\x89PNG\x00\x02\x03", "image/png")).differences
    assert diff.path == "body" and diff.kind == "changed"
    assert diff.legacy["length"] == 6 and diff.shadow["length"] == 7
    assert diff.legacy["sha256"] != diff.shadow["sha256"] and len(diff.legacy["sha256"]) == 64


def test_empty_json_body_on_one_side() -> None:
    assert kinds(cmp(js({"a": 1}), raw(b"", "application/json"))) == [("body", "missing")]
    assert cmp(raw(b"", "application/json"), raw(b"", "application/json")).verdict == "match"


# ------------------------------------------------------------------------------------------------ invalid JSON

def test_invalid_json_on_one_side() -> None:
    result = cmp(js({"a": 1}), raw(b"<html>oops</html>", "application/json"))
    (diff,) = result.differences
    assert (diff.path, diff.kind) == ("body", "invalid_json")
    assert isinstance(diff.shadow, str) and diff.shadow.startswith("invalid JSON")
    assert diff.legacy == '{"a": 1}'


def test_shadow_error_page_where_json_was_expected() -> None:
    result = cmp(js({"a": 1}), raw(b"<h1>500</h1>", "text/html", status=500))
    assert kinds(result) == [("status", "changed"), ("header:content-type", "changed"), ("body", "invalid_json")]


def test_invalid_json_on_both_sides() -> None:
    assert cmp(raw(b"{oops", "application/json"), raw(b"{oops", "application/json")).verdict == "match"
    assert kinds(cmp(raw(b"{oops", "application/json"), raw(b"{nope", "application/json"))) == [
        ("body:line:1", "changed")]


# --------------------------------------------------------------------------------------------- compressed bodies

def gz(doc: Any) -> Captured:
    return Captured(200, JSON + (("Content-Encoding", "gzip"),), gzip.compress(json.dumps(doc).encode()))


def test_gzip_body_is_compared_decompressed() -> None:
    assert cmp(gz({"a": 1, "b": [1, 2]}), js({"b": [1, 2], "a": 1})).verdict == "match"
    assert kinds(cmp(gz({"a": 1}), gz({"a": 2}))) == [("$.a", "changed")]


def test_deflate_zlib_and_raw() -> None:
    body = json.dumps({"a": 1}).encode()
    wrapped = Captured(200, JSON + (("Content-Encoding", "deflate"),), zlib.compress(body))
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bare = Captured(200, JSON + (("Content-Encoding", "deflate"),), packer.compress(body) + packer.flush())
    assert cmp(wrapped, bare).verdict == "match"
    assert cmp(wrapped, js({"a": 1})).verdict == "match"


def test_corrupt_gzip_is_a_difference() -> None:
    broken = Captured(200, JSON + (("Content-Encoding", "gzip"),), b"\x1f\x8b not gzip at all")
    (diff,) = cmp(gz({"a": 1}), broken).differences
    assert diff.path == "body" and diff.shadow["note"] == "decode_error"


def test_zip_bomb_falls_back_to_hash_compare() -> None:
    bomb = gzip.compress(b"0" * (MAX_DECOMPRESSED + 1024))
    assert len(bomb) < 100_000
    legacy = Captured(200, JSON + (("Content-Encoding", "gzip"),), bomb)
    assert cmp(legacy, legacy).verdict == "match"
    (diff,) = cmp(legacy, gz({"a": 1})).differences
    assert diff.kind == "changed" and diff.legacy["note"] == "too_large"
    assert diff.legacy["length"] == len(bomb)


def test_unknown_or_unavailable_coding_compares_raw_bytes() -> None:
    headers = JSON + (("Content-Encoding", "zstd"),)
    assert cmp(Captured(200, headers, b"\x28\xb5"), Captured(200, headers, b"\x28\xb5")).verdict == "match"
    (diff,) = cmp(Captured(200, headers, b"\x28\xb5"), Captured(200, headers, b"\x28\xb6")).differences
    assert diff.legacy["note"] == "unsupported_encoding"


# --------------------------------------------------------------------------------------------------- truncated

def test_truncated_with_equal_prefix_is_ignored_not_mismatch() -> None:
    body = json.dumps(big_items(100)).encode()
    legacy = raw(body[:1000], "application/json", truncated=True)
    shadow = raw(body[:1000], "application/json", truncated=True)
    result = cmp(legacy, shadow)
    assert result.verdict == "ignored"
    assert [d.kind for d in result.ignored] == ["truncated"]
    assert cmp(legacy, raw(body, "application/json")).verdict == "ignored"


def test_truncated_with_differing_prefix_is_a_mismatch() -> None:
    legacy = raw(b'{"a": 1, "b": "' + b"x" * 100, "application/json", truncated=True)
    shadow = raw(b'{"a": 2, "b": "' + b"x" * 100, "application/json", truncated=True)
    (diff,) = cmp(legacy, shadow).differences
    assert (diff.path, diff.kind, diff.legacy["offset"]) == ("body", "changed", 6)
    assert diff.shadow["excerpt"].startswith("2")


def test_complete_body_shorter_than_the_truncated_prefix() -> None:
    legacy = raw(b"abcdefgh", "application/octet-stream", truncated=True)
    assert kinds(cmp(legacy, raw(b"abcd", "application/octet-stream"))) == [("body", "length")]


def test_truncated_gzip_is_compared_by_its_decodable_prefix() -> None:
    body = json.dumps(big_items(2_000)).encode()
    packed = gzip.compress(body)
    cut = Captured(200, JSON + (("Content-Encoding", "gzip"),), packed[: len(packed) // 2], truncated=True)
    assert cmp(cut, raw(body, "application/json")).verdict == "ignored"


# ------------------------------------------------------------------------------------------------------ noise

def test_noise_learned_from_two_legacy_answers_then_ignored() -> None:
    first = js({"id": 7, "generated_at": "2024-01-01T00:00:00Z", "items": [{"id": 1, "t": 1}, {"id": 2, "t": 2}]})
    second = js({"id": 7, "generated_at": "2024-01-01T00:00:05Z", "items": [{"id": 1, "t": 3}, {"id": 2, "t": 4}]})
    noise = noisy_fields(first, second, PLAIN)
    assert noise == {"$.generated_at", "$.items[*].t"}
    shadow = js({"id": 7, "generated_at": "2099-01-01", "items": [{"id": 1, "t": 9}, {"id": 2, "t": 9}]})
    assert cmp(first, shadow).verdict == "mismatch"
    result = cmp(first, shadow, noise=tuple(noise))
    assert result.verdict == "ignored"
    assert {d.field for d in result.ignored} == noise
    wrong = js({"id": 8, "generated_at": "2099-01-01", "items": [{"id": 1, "t": 9}, {"id": 2, "t": 9}]})
    assert kinds(cmp(first, wrong, noise=tuple(noise))) == [("$.id", "changed")]


def test_noise_inside_unordered_arrays_is_learned_per_field() -> None:
    rules = compile_rules(unordered=["$.items"])
    first = js({"items": [{"id": 1, "at": 1}, {"id": 2, "at": 1}]})
    second = js({"items": [{"id": 1, "at": 2}, {"id": 2, "at": 2}]})
    noise = noisy_fields(first, second, rules)
    assert noise == {"$.items[*].at"}
    shadow = js({"items": [{"id": 2, "at": 5}, {"id": 1, "at": 6}]})
    assert cmp(first, shadow, rules, tuple(noise)).verdict == "ignored"


def test_noise_on_headers_and_status() -> None:
    a = js({}, headers=JSON + (("X-Random", "1"),))
    b = js({}, status=201, headers=JSON + (("X-Random", "2"),))
    noise = noisy_fields(a, b, PLAIN)
    assert noise == {"status", "header:x-random"}
    assert cmp(a, b, noise=tuple(noise)).verdict == "ignored"


def test_noisy_fields_of_identical_answers_is_empty() -> None:
    assert noisy_fields(js({"a": [1, 2]}), js({"a": [1, 2]}), PLAIN) == frozenset()


def test_unparseable_noise_entries_are_skipped() -> None:
    assert cmp(js({"a": 1}), js({"a": 2}), noise=("$.[", "$.a")).verdict == "ignored"


# -------------------------------------------------------------------------------------------------- rule errors

@pytest.mark.parametrize(("kwargs", "key", "words"), [
    ({"ignore": ["$.a", "$.b", "$.c["]}, "ignore[2]", "expected an index"),
    ({"ignore": ["items[*]"]}, "ignore[0]", "starts with '$'"),
    ({"ignore": ["$.a[-1]"]}, "ignore[0]", "negative"),
    ({"ignore": ["$.a[?(@.x)]"]}, "ignore[0]", "filter"),
    ({"ignore": ["$.a[0:2]"]}, "ignore[0]", "slices"),
    ({"ignore": ["$.0"]}, "ignore[0]", "[N]"),
    ({"ignore": ["$['open"]}, "ignore[0]", "closing"),
    ({"ignore": ["$a"]}, "ignore[0]", "expected '.'"),
    ({"ignore": ["$.a", "header:"]}, "ignore[1]", "header name"),
    ({"ignore": ["header:Bad Name"]}, "ignore[0]", "header name"),
    ({"ignore": [3]}, "ignore[0]", "JSON path"),
    ({"ignore": "$.a"}, "ignore", "list"),
    ({"unordered": ["$.a", {"path": "$.b", "by": ""}]}, "unordered[1]", "'by'"),
    ({"unordered": [{"path": "$.b", "key": "id"}]}, "unordered[0]", "unknown key"),
    ({"unordered": [{"by": "id"}]}, "unordered[0]", "'path'"),
    ({"unordered": ["$.a["]}, "unordered[0]", "expected"),
    ({"tolerance": -1}, "tolerance", ">= 0"),
    ({"tolerance": "0.1"}, "tolerance", "number"),
    ({"tolerance": float("nan")}, "tolerance", "finite"),
    ({"headers_ignore": ["ok", "no way"]}, "headers_ignore[1]", "header name"),
])
def test_rule_errors_name_the_entry(kwargs: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(RuleError) as info:
        compile_rules(**kwargs)
    assert info.value.key == key
    assert words in str(info.value)


def test_rule_error_quotes_the_offending_path() -> None:
    with pytest.raises(RuleError, match=r"'\$\.items\[\*\.x'"):
        compile_rules(ignore=["$.items[*.x"])


def test_accepted_path_forms() -> None:
    rules = compile_rules(ignore=["$", "$.a", "$.a-b", "$.*", "$[*]", "$[0]", "$..x", "$..*", "$..[0]",
                                  "$['a b']", '$["q\\"uote"]', "$.a.b[12].c", "header:Date", "HEADER:x-y-*"])
    assert rules.ignore_headers == {"date"} and rules.ignore_header_prefixes == ("x-y-",)
    assert len(rules.ignore) == 12


def test_compiled_rules_compare_equal_when_written_equal() -> None:
    assert compile_rules(ignore=["$.a"], unordered=["$.b"]) == compile_rules(ignore=["$.a"], unordered=["$.b"])
    assert compile_rules(ignore=["$.a"]) != compile_rules(ignore=["$.b"])


# ---------------------------------------------------------------------------------------------------- properties

scalars = (st.none() | st.booleans() | st.integers(-(10 ** 20), 10 ** 20)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
keys = st.text(max_size=6) | st.sampled_from(["id", "a b", "it's", "0", "x.y", "é", "\\", "[*]", "*", ""])
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=25)


def reorder(doc: Any, rnd: random.Random) -> Any:
    """The same document with every object's keys in another order."""
    if isinstance(doc, dict):
        items = list(doc.items())
        rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(doc, list):
        return [reorder(v, rnd) for v in doc]
    return doc


@given(documents, st.randoms(use_true_random=False))
def test_a_document_always_matches_itself_in_any_key_order(doc: Any, rnd: random.Random) -> None:
    assert cmp(js(doc), js(doc)).verdict == "match"
    assert cmp(js(doc), js(reorder(doc, rnd))).verdict == "match"


@given(st.lists(documents, max_size=12), st.randoms(use_true_random=False))
def test_a_permuted_unordered_array_always_matches(items: list[Any], rnd: random.Random) -> None:
    permuted = [reorder(x, rnd) for x in items]
    rnd.shuffle(permuted)
    rules = compile_rules(unordered=["$.items"])
    assert cmp(js({"items": items}), js({"items": permuted}), rules).verdict == "match"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(documents, documents)
def test_differences_carry_parseable_paths_and_ignoring_their_fields_leaves_no_mismatch(a: Any, b: Any) -> None:
    result = cmp(js(a), js(b))
    assert (result.verdict == "match") == (not result.differences)
    for diff in result.differences:
        assert compile_rules(ignore=[diff.path, diff.field])   # both are valid ignore paths
        assert cmp(js(a), js(b), compile_rules(ignore=[diff.path])).differences.count(diff) == 0
    noise = tuple(d.field for d in result.differences)
    assert cmp(js(a), js(b), noise=noise).verdict in ("match", "ignored")


@given(documents, documents)
def test_verdict_is_symmetric(a: Any, b: Any) -> None:
    assert cmp(js(a), js(b)).verdict == cmp(js(b), js(a)).verdict


@given(st.lists(st.floats(-1e6, 1e6), max_size=20), st.randoms(use_true_random=False))
def test_unordered_with_tolerance_matches_small_perturbations(values: list[float], rnd: random.Random) -> None:
    rules = compile_rules(unordered=["$"], tolerance=0.01)
    shifted = [v + rnd.uniform(-0.001, 0.001) for v in values]
    rnd.shuffle(shifted)
    assert cmp(js(values), js(shifted), rules).verdict == "match"
