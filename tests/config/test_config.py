"""routes.yaml validation: every error names file, line, route and key; units; references; the shipped file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import units
from gateway.config.document import json_schema
from gateway.config.model import Config
from gateway.config.parse import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
version: 1
backends:
  legacy: {url: "http://127.0.0.1:8001"}
  reviews: {url: "http://127.0.0.1:8101", timeouts: {connect: 250ms, response: 5s}}
fallback: legacy
routes:
  - name: reviews
    match:
      path: {template: "/api/products/{id}/reviews"}
    to: reviews
    stage: shadow
"""


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return load(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return info.value.problems


def test_shipped_routes_yaml_is_valid_and_shows_every_stage() -> None:
    cfg = load(ROOT / "routes.yaml")
    assert {r.stage for r in cfg.routes} >= {"shadow", "canary", "legacy"}
    assert cfg.fallback == "legacy"
    assert cfg.warnings == ()


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, BASE)
    assert cfg.listen == ("127.0.0.1", 8080)
    assert cfg.admin_listen == ("127.0.0.1", 9901)
    route = cfg.routes[0]
    assert route.legacy == "legacy" and route.to == "reviews"
    assert cfg.backends["reviews"].timeouts.connect == 0.25
    assert cfg.backends["legacy"].port == 8001
    assert cfg.store.dir == tmp_path / ".strangler"


def test_misspelled_key_names_file_line_route_and_key(tmp_path: Path) -> None:
    lines = problems(tmp_path, BASE.replace("    stage: shadow", "    stgae: shadow"))
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'routes.yaml'}:11: route 'reviews': key 'stgae': unknown key")
    assert "did you mean 'stage'" in lines[0]


def test_nested_unknown_key_points_at_its_line(tmp_path: Path) -> None:
    text = BASE + "    shadow:\n      percent: 50\n      compare: {ignroe: []}\n"
    (line,) = problems(tmp_path, text)
    assert ":14: route 'reviews': key 'shadow.compare.ignroe': unknown key" in line


def test_unknown_backend_and_missing_target(tmp_path: Path) -> None:
    text = BASE.replace("to: reviews", "to: reveiws") + "  - name: bad\n    match: {path: {exact: /x}}\n" \
        "    stage: extracted\n"
    lines = problems(tmp_path, text)
    assert any(":10: route 'reviews': key 'to': unknown backend 'reveiws'" in x for x in lines)
    assert any("route 'bad': key 'stage': stage extracted needs `to:`" in x for x in lines)


def test_bad_values_say_what_was_expected(tmp_path: Path) -> None:
    text = BASE.replace("connect: 250ms", "connect: soon") + "    shadow: {percent: 150, max_body: lots}\n"
    lines = problems(tmp_path, text)
    joined = "\n".join(lines)
    assert "key 'backends.reviews.timeouts.connect': expected a duration like 250ms" in joined
    assert "key 'shadow.percent': expected a percentage between 0 and 100" in joined
    assert "key 'shadow.max_body': expected a size like 512KiB" in joined


def test_match_needs_exactly_one_path_kind_and_valid_patterns(tmp_path: Path) -> None:
    two = BASE.replace('path: {template: "/api/products/{id}/reviews"}', 'path: {exact: /a, prefix: /b}')
    assert any("expected exactly one of exact, prefix, template, regex" in x for x in problems(tmp_path, two))
    bad_regex = BASE.replace('path: {template: "/api/products/{id}/reviews"}', 'path: {regex: "/a(["}')
    assert any("key 'match.path.regex'" in x for x in problems(tmp_path, bad_regex))


def test_duplicate_route_names(tmp_path: Path) -> None:
    text = BASE + "  - name: reviews\n    match: {path: {exact: /x}}\n"
    assert any("duplicate route name 'reviews'" in x for x in problems(tmp_path, text))


def test_invalid_yaml_reports_its_line(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, BASE + "  - name: [unclosed\n")
    assert ":13: invalid YAML" in line or ":12: invalid YAML" in line


def test_bad_compare_rule_points_at_the_list_item(tmp_path: Path) -> None:
    text = BASE + "    shadow:\n      compare:\n        ignore: [\"$.ok\", \"$.items[?(@.x)]\"]\n"
    (line,) = problems(tmp_path, text)
    assert ":14: route 'reviews': key 'shadow.compare.ignore[1]'" in line


def test_unreachable_route_is_a_warning(tmp_path: Path) -> None:
    text = BASE + "  - name: hidden\n    match: {path: {exact: /a}}\n" \
        "  - name: first\n    match: {path: {exact: /a}}\n    priority: 5\n"
    cfg = load_text(tmp_path, text)
    assert any("route 'hidden'" in w and "can never match" in w and "'first'" in w for w in cfg.warnings)


def test_fingerprint_changes_only_for_the_edited_route(tmp_path: Path) -> None:
    text = BASE + "  - name: other\n    match: {path: {prefix: /o}}\n"
    a = load_text(tmp_path, text)
    b = load_text(tmp_path, text.replace("prefix: /o", "prefix: /p"))
    assert a.route("reviews").fingerprint == b.route("reviews").fingerprint
    assert a.route("other").fingerprint != b.route("other").fingerprint


@pytest.mark.parametrize(("raw", "seconds"), [("250ms", 0.25), ("5s", 5.0), ("1m", 60.0), (3, 3.0), ("1.5s", 1.5), ("7d", 604800.0)])
def test_durations(raw: object, seconds: float) -> None:
    assert units.parse_duration(raw) == seconds


@pytest.mark.parametrize(("raw", "size"), [("512KiB", 524288), ("1MiB", 1048576), ("10MB", 10_000_000), (100, 100)])
def test_sizes(raw: object, size: int) -> None:
    assert units.parse_size(raw) == size


@pytest.mark.parametrize(("raw", "pct"), [(10, 10.0), ("10%", 10.0), ("2.5%", 2.5), ("100", 100.0)])
def test_percentages(raw: object, pct: float) -> None:
    assert units.parse_percent(raw) == pct


@pytest.mark.parametrize("raw", ["fast", "-1s", True, "5 parsecs"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        units.parse_duration(raw)


def test_json_schema_covers_every_key() -> None:
    schema = json_schema()
    route = schema["properties"]["routes"]["items"]
    assert route["additionalProperties"] is False
    assert set(route["properties"]) >= {"name", "match", "to", "stage", "shadow", "canary", "guard", "on_error"}
    assert route["properties"]["stage"]["enum"] == ["legacy", "shadow", "canary", "extracted"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_strangler_check_cli(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(BASE.replace("    stage: shadow", "    stgae: shadow"))
    bad = run_cli("check", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith("routes.yaml:11: route 'reviews': key 'stgae'")
    (tmp_path / "routes.yaml").write_text(BASE)
    good = run_cli("check", "--json", cwd=tmp_path)
    assert good.returncode == 0
    assert json.loads(good.stdout)["ok"] is True


def test_strangler_schema_cli_prints_json(tmp_path: Path) -> None:
    out = run_cli("schema", cwd=tmp_path)
    assert out.returncode == 0
    assert json.loads(out.stdout)["title"] == "Strangler routes.yaml"


def test_strangler_explain_offline(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(BASE)
    out = run_cli("explain", "GET", "/api/products/7/../3/reviews", "--offline", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["normalized_path"] == "/api/products/3/reviews"
    assert data["route"] == "reviews"
    assert data["backend"] == "legacy (shadowed to reviews)"


def test_strangler_explain_tells_a_sticky_users_side(tmp_path: Path) -> None:
    text = BASE + "  - name: likes\n    match: {path: {prefix: /l}}\n    to: reviews\n    stage: canary\n" \
        "    canary: {weight: 50, sticky: {header: X-User-Id}}\n"
    (tmp_path / "routes.yaml").write_text(text)
    from gateway.rollout.decision import in_share

    sides = set()
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        out = run_cli("explain", "GET", "/l/1", "-H", f"X-User-Id: {user}", "--offline", "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        backend = json.loads(out.stdout)["backend"]
        expected = "reviews" if in_share("likes", 50, user) else "legacy"
        assert f"this request: {expected} (sticky by header x-user-id={user})" in backend
        sides.add(expected)
    assert sides == {"reviews", "legacy"}


# -- what the gateway accepts from clients, and who may use the admin listener ---------------------------------


def test_defaults_come_from_the_schema(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, BASE)
    assert cfg.limits.max_request_head == 64 * 1024
    assert cfg.limits.underscores_in_headers == "drop"
    assert cfg.limits.path_parameters == "strip"
    assert cfg.admin_hosts == ()
    assert cfg.admin_read_token is False


def test_every_key_can_be_set(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, BASE + """\
limits: {max_request_head: 32KiB, underscores_in_headers: refuse, path_parameters: refuse}
admin: {listen: 127.0.0.1:9901, hosts: [strangler.internal, "10.0.0.5:9901", "[::1]:9901"], read_token: true}
""")
    assert cfg.limits.max_request_head == 32 * 1024
    assert cfg.limits.underscores_in_headers == "refuse"
    assert cfg.limits.path_parameters == "refuse"
    assert cfg.admin_hosts == ("strangler.internal", "10.0.0.5:9901", "[::1]:9901")
    assert cfg.admin_read_token is True


def test_bad_values_and_misspellings_are_errors(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
limits:
  max_request_head: 10MiB
  underscores_in_headers: allow
  path_parameter: strip
admin:
  hosts: ["a@evil.com"]
  read_tokens: true
""")
    text = "\n".join(found)
    assert "routes.yaml:13: key 'limits.max_request_head': expected a size between 1KiB and 1MiB" in text
    assert "routes.yaml:14: key 'limits.underscores_in_headers': expected one of drop, refuse, pass" in text
    assert "key 'limits.path_parameter': unknown key" in text and "did you mean 'path_parameters'" in text
    assert "key 'admin.hosts[0]': expected a host name or address" in text
    assert "key 'admin.read_tokens': unknown key" in text


def test_strangler_check_and_schema_know_the_keys(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(BASE + "limits: {max_request_head: 60KiB, path_parameters: keep}\n"
                                          "admin: {hosts: [gw.internal], read_token: true}\n")
    good = run_cli("check", "--json", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    schema = json_schema()["properties"]
    assert {"max_request_head", "underscores_in_headers", "path_parameters"} <= set(
        schema["limits"]["properties"])
    assert {"hosts", "read_token"} <= set(schema["admin"]["properties"])
    assert json.loads(run_cli("schema", cwd=tmp_path).stdout)["properties"]["limits"]["properties"][
        "path_parameters"]["enum"] == ["strip", "refuse", "keep"]
