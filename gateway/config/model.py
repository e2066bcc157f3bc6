"""routes.yaml version 1: parse, validate, and build the immutable configuration.

Flow: one pass of PyYAML's *safe* loader (its C implementation when installed) composes the node tree, which gives
the line of every key, and constructs the plain values from that same tree (exactly what ``yaml.safe_load`` does,
without parsing the file twice). The declarative schema in ``ROUTES_SCHEMA`` validates and converts units; the builder
then resolves cross-references (backend names, stages needing a target) and compiles what can be compiled once
(path matchers, compare rules). Any problem is reported as ``FILE:LINE: route 'NAME': key 'a.b': message``.

The result, ``Config``, is a tree of frozen dataclasses: a reload builds a new one and swaps it whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.config.schema import (
    ADMIN_ACCESS,
    MISSING,
    SECTION_DEFAULTS,
    WIRE_LIMITS,
    Bool,
    Duration,
    Field,
    Int,
    Issues,
    KeyPath,
    ListOf,
    MapOf,
    Num,
    Obj,
    Percent,
    Problem,
    Size,
    Str,
    suggest,
)

STAGES = ("legacy", "shadow", "canary", "extracted")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
HTTP_METHOD = Str(pattern=r"[A-Za-z]{1,20}", expected="an HTTP method such as GET")
LISTEN = Str(pattern=r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}", expected="HOST:PORT, e.g. 127.0.0.1:8080")


# --------------------------------------------------------------------------------------------------------------
# The immutable model
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 2.0      # TCP connect
    response: float = 30.0    # request sent -> response headers
    idle: float = 60.0        # gap between two body reads, and how long a pooled connection may sit idle


@dataclass(frozen=True, slots=True)
class CircuitSpec:
    failures: int = 5         # consecutive failures that open the circuit
    cooldown: float = 10.0    # open -> half-open after this long


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    url: str
    scheme: str
    host: str
    port: int
    base_path: str            # prefix prepended to the forwarded path ("" for none)
    timeouts: Timeouts
    max_connections: int      # pool size
    max_concurrency: int | None  # in-flight requests beyond which the gateway answers 503
    queue: int                # requests allowed to wait for a concurrency slot
    circuit: CircuitSpec | None

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StickyKey:
    kind: str                 # "header" | "cookie"
    name: str


@dataclass(frozen=True, slots=True)
class CompareSpec:
    ignore: tuple[str, ...] = ()
    unordered: tuple[Any, ...] = ()
    tolerance: float = 0.0
    noise: float = 0.0        # percent of shadowed safe requests also sent twice to legacy
    headers: bool = True
    rules: Any = None         # gateway.compare.CompareRules, compiled once


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    percent: float = 100.0
    key: StickyKey | None = None
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    max_body: int = 1024 * 1024
    timeout: float = 5.0      # the whole shadow exchange, independent of the backend's own timeouts
    compare: CompareSpec = field(default_factory=CompareSpec)


@dataclass(frozen=True, slots=True)
class CanarySpec:
    weight: float = 0.0
    sticky: StickyKey | None = None
    steps: tuple[float, ...] = ()
    interval: float = 300.0


@dataclass(frozen=True, slots=True)
class GuardSpec:
    window: float = 60.0
    min_requests: int = 50
    max_error_rate: float = 2.0     # percent
    max_mismatch_rate: float | None = None
    max_p99_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    match: Any                # gateway.matching.MatchSpec
    stage: str
    to: str | None            # the extracted backend
    legacy: str               # the monolith backend for this route (the top-level fallback unless set)
    priority: int | None
    shadow: ShadowSpec | None
    canary: CanarySpec | None
    on_error: str             # "fail" | "fallback"
    guard: GuardSpec | None
    reverse_shadow: bool
    line: int
    order: int
    fingerprint: str          # changes when the user edits this route; clears a rollback pin


@dataclass(frozen=True, slots=True)
class TracingSpec:
    sample: float = 100.0     # percent of root traces kept
    response_header: bool = True
    max_per_second: int = 100  # at most this many new traces kept per second (0: no limit)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    dir: Path
    max_samples: int = 200            # comparison samples kept per route and verdict
    max_age: float = 7 * 86400.0
    max_traces: int = 2000


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_body: int | None = None   # None: unlimited (streamed)
    client_idle: float = 60.0             # an idle keep-alive connection, or a request head still arriving
    drain: float = 0.0                    # on SIGTERM: keep serving this long with /readyz at 503
    # schema.WIRE_LIMITS (defaults there): 431 beyond this head size; '_' header names; ';' path parameters
    max_request_head: int = field(kw_only=True)
    underscores_in_headers: str = field(kw_only=True)
    path_parameters: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    listen: tuple[str, int]
    admin_listen: tuple[str, int]
    admin_hosts: tuple[str, ...]       # more Host values the admin listener answers (schema.ADMIN_ACCESS)
    admin_read_token: bool             # reads need the admin token too
    backends: Mapping[str, Backend]
    fallback: str
    routes: tuple[RouteSpec, ...]
    tracing: TracingSpec
    store: StoreSpec
    limits: Limits
    digest: str                        # sha256 of the file's bytes
    warnings: tuple[str, ...] = ()

    def route(self, name: str) -> RouteSpec | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None


class ConfigError(Exception):
    """routes.yaml could not be loaded; ``problems`` are ready-to-print ``FILE:LINE: message`` lines."""

    def __init__(self, problems: list[str], warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings or []


# --------------------------------------------------------------------------------------------------------------
# The schema (also rendered as JSON Schema by `strangler schema`)
# --------------------------------------------------------------------------------------------------------------

STICKY = Obj({"header": Field(Str(min_length=1)), "cookie": Field(Str(min_length=1))},
             exactly_one=("header", "cookie"),
             description="Hash this request header or cookie so the same user always gets the same answer.")

TIMEOUTS = Obj({
    "connect": Field(Duration("TCP connect timeout"), default=2.0),
    "response": Field(Duration("time from sending the request to the response headers"), default=30.0),
    "idle": Field(Duration("longest gap between two body reads; pooled connections idle longer are closed"),
                  default=60.0),
})

BACKEND = Obj({
    "url": Field(Str(pattern=r"https?://[^\s/?#]+(/[^\s?#]*)?", expected="an http:// URL such as http://127.0.0.1:8001"),
                 required=True),
    "timeouts": Field(TIMEOUTS),
    "max_connections": Field(Int(minimum=1), default=256),
    "max_concurrency": Field(Int(minimum=1, description="in-flight requests before answering 503")),
    "queue": Field(Int(minimum=0, description="requests that may wait for a concurrency slot"), default=0),
    "circuit": Field(Obj({"failures": Field(Int(minimum=1), default=5),
                          "cooldown": Field(Duration(), default=10.0)},
                         description="open after N consecutive failures; probe again after the cooldown")),
}, description="An upstream service.")


def _unordered_item() -> Obj:
    return Obj({"path": Field(Str(min_length=1), required=True), "by": Field(Str(min_length=1))},
               shorthand=Str(min_length=1), shorthand_key="path",
               description="Compare this array as a multiset, or match its elements by the `by` key.")


COMPARE = Obj({
    "ignore": Field(ListOf(Str(min_length=1), description="JSON paths ($.a[*].b) and header:Name to ignore"),
                    default=[]),
    "unordered": Field(ListOf(_unordered_item()), default=[]),
    "tolerance": Field(Num(minimum=0, description="absolute numeric tolerance"), default=0.0),
    "noise": Field(Percent("share of shadowed safe requests also sent a second time to legacy to learn noise"),
                   default=0.0),
    "headers": Field(Bool("compare response headers too"), default=True),
})

SHADOW = Obj({
    "percent": Field(Percent("share of requests shadowed"), default=100.0),
    "key": Field(STICKY),
    "methods": Field(ListOf(HTTP_METHOD, min_items=1), default=["GET", "HEAD"]),
    "max_body": Field(Size("larger request bodies are not shadowed"), default=1024 * 1024),
    "timeout": Field(Duration("the whole shadow exchange"), default=5.0),
    "compare": Field(COMPARE),
})

CANARY = Obj({
    "weight": Field(Percent("share of users sent to the extracted backend"), default=0.0),
    "sticky": Field(STICKY),
    "steps": Field(ListOf(Percent(), min_items=1, description="progressive weights, advanced while healthy")),
    "interval": Field(Duration("time between two steps"), default=300.0),
})

GUARD = Obj({
    "window": Field(Duration("sliding window"), default=60.0),
    "min_requests": Field(Int(minimum=1, description="fewer requests in the window: inconclusive"), default=50),
    "max_error_rate": Field(Percent(), default=2.0),
    "max_mismatch_rate": Field(Percent()),
    "max_p99_ratio": Field(Num(minimum=0.0, description="extracted p99 / legacy p99")),
})

PATH_MATCH = Obj({
    "exact": Field(Str(min_length=1)),
    "prefix": Field(Str(min_length=1)),
    "template": Field(Str(min_length=1)),
    "regex": Field(Str(min_length=1)),
}, exactly_one=("exact", "prefix", "template", "regex"))

MATCH = Obj({
    "path": Field(PATH_MATCH, required=True),
    "methods": Field(ListOf(HTTP_METHOD, min_items=1)),
    "headers": Field(MapOf(Str(), key_pattern=r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", key_expected="a header name")),
})

ROUTE = Obj({
    "name": Field(Str(pattern=NAME_PATTERN, expected="a route name of letters, digits, '_', '-', '.'"),
                  required=True),
    "match": Field(MATCH, required=True),
    "to": Field(Str(pattern=NAME_PATTERN, expected="a backend name")),
    "legacy": Field(Str(pattern=NAME_PATTERN, expected="a backend name")),
    "stage": Field(Str(enum=STAGES), default="legacy"),
    "priority": Field(Int()),
    "shadow": Field(SHADOW),
    "canary": Field(CANARY),
    "on_error": Field(Str(enum=("fail", "fallback")), default="fail"),
    "guard": Field(GUARD),
    "reverse_shadow": Field(Bool("in stage extracted, shadow the monolith to keep comparing"), default=False),
})

ROUTES_SCHEMA = Obj({
    "version": Field(Int(minimum=1, maximum=1), required=True),
    "listen": Field(LISTEN, default="127.0.0.1:8080"),
    "admin": Field(Obj({"listen": Field(LISTEN, default="127.0.0.1:9901"), **ADMIN_ACCESS}),
                   default=SECTION_DEFAULTS),
    "backends": Field(MapOf(BACKEND, key_pattern=NAME_PATTERN, key_expected="a backend name"), required=True),
    "fallback": Field(Str(pattern=NAME_PATTERN, expected="a backend name"), required=True),
    "routes": Field(ListOf(ROUTE), default=[]),
    "tracing": Field(Obj({"sample": Field(Percent("share of traces kept"), default=100.0),
                          "max_per_second": Field(Int(minimum=0, description="at most this many new traces kept "
                                                      "per second; 0: no limit"), default=100),
                          "response_header": Field(Bool("send X-Trace-Id"), default=True)}),
                     default=SECTION_DEFAULTS),
    "store": Field(Obj({"dir": Field(Str(min_length=1), default=".strangler"),
                        "max_samples": Field(Int(minimum=1), default=200),
                        "max_age": Field(Duration(), default=7 * 86400.0),
                        "max_traces": Field(Int(minimum=10), default=2000)}), default=SECTION_DEFAULTS),
    "limits": Field(Obj({"max_request_body": Field(Size("larger request bodies get 413")),
                         "client_idle": Field(Duration("a client connection idle (or still sending its request "
                                                       "head) this long is closed"), default=60.0),
                         "drain": Field(Duration("on SIGTERM, keep serving this long while /readyz answers 503, "
                                                 "so a load balancer moves traffic away first"), default=0.0),
                         **WIRE_LIMITS}),
                    default=SECTION_DEFAULTS),
}, description="Strangler gateway configuration (routes.yaml, version 1).")


def json_schema() -> dict[str, Any]:
    schema = ROUTES_SCHEMA.json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Strangler routes.yaml", **schema}


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    """Read, validate and build the config at ``path``; raises ``ConfigError`` with every problem found."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    return parse(raw, path)


def parse(raw: bytes, path: Path) -> Config:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    try:
        data, node = _safe_load_with_nodes(text)
        lines = _key_lines(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}:{line}: invalid YAML: {problem}"]) from exc
    issues = Issues()
    values = ROUTES_SCHEMA.check(data if data is not None else {}, (), issues)
    config = None
    if values is not MISSING:
        config = _build(values, path, raw, lines, issues)
    problems = [_format(p, path, lines, data) for p in issues.problems]
    errors = [f for p, f in zip(issues.problems, problems, strict=True) if p.severity == "error"]
    warnings = [f for p, f in zip(issues.problems, problems, strict=True) if p.severity != "error"]
    if errors or config is None:
        raise ConfigError(errors or [f"{path}:1: invalid configuration"], warnings)
    return _with_warnings(config, warnings)


def _with_warnings(config: Config, warnings: list[str]) -> Config:
    from dataclasses import replace

    return replace(config, warnings=tuple(warnings))


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_load_with_nodes(text: str) -> tuple[Any, yaml.Node | None]:
    """``yaml.safe_load`` that also returns the node tree it built (for line numbers). Safe loader only: plain
    scalars, lists and mappings, never arbitrary objects."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def _key_lines(node: yaml.Node | None) -> dict[KeyPath, int]:
    """Map every key path of the document to the 1-based line where it is written."""
    lines: dict[KeyPath, int] = {}

    def walk(n: yaml.Node, path: KeyPath) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                lines[path + (key,)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    if node is not None:
        walk(node, ())
    return lines


def _format(problem: Problem, path: Path, lines: dict[KeyPath, int], data: Any) -> str:
    key_path = problem.path
    line = 1
    for cut in range(len(key_path), -1, -1):
        if key_path[:cut] in lines:
            line = lines[key_path[:cut]]
            break
    where = ""
    if len(key_path) >= 2 and key_path[0] == "routes" and isinstance(key_path[1], int):
        where = f"route {_route_label(data, key_path[1])}: "
        key_path = key_path[2:]
    key = _dotted(key_path)
    prefix = "warning: " if problem.severity == "warning" else ""
    return f"{path}:{line}: {prefix}{where}{'key ' + repr(key) + ': ' if key else ''}{problem.message}"


def _route_label(data: Any, index: int) -> str:
    try:
        name = data["routes"][index].get("name")
    except (TypeError, KeyError, IndexError, AttributeError):
        name = None
    return repr(name) if isinstance(name, str) else f"#{index + 1}"


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------------------------------------------
# Building the model from validated values
# --------------------------------------------------------------------------------------------------------------


def _build(v: dict[str, Any], path: Path, raw: bytes, lines: dict[KeyPath, int], issues: Issues) -> Config | None:
    backends = {name: _backend(name, b, ("backends", name), issues) for name, b in v["backends"].items()}
    if v["fallback"] not in backends:
        issues.error(("fallback",), f"unknown backend {v['fallback']!r}; defined: {', '.join(backends) or 'none'}")
    routes = []
    seen: dict[str, int] = {}
    for i, r in enumerate(v["routes"]):
        where: KeyPath = ("routes", i)
        if r["name"] in seen:
            issues.error(where + ("name",), f"duplicate route name {r['name']!r} (first defined as route "
                                            f"#{seen[r['name']] + 1})")
            continue
        seen[r["name"]] = i
        route = _route(r, i, v["fallback"], backends, where, issues, lines.get(where, 0))
        if route is not None:
            routes.append(route)
    if issues.errors:
        return None
    _check_reachability(routes, issues)
    admin_host = parse_listen(v["admin"]["listen"])[0]
    if admin_host not in ("127.0.0.1", "::1", "localhost") and not admin_host.startswith("127.") \
            and not v["admin"]["read_token"]:
        issues.warn(("admin", "listen"), f"the admin listener on {admin_host} is reachable from other machines: "
                                         "reads (routes, diffs with captured bodies, traces) need no token "
                                         "unless admin.read_token is true")
    store = v["store"]
    store_dir = Path(store["dir"])
    if not store_dir.is_absolute():
        store_dir = path.resolve().parent / store_dir
    tracing, limits = v["tracing"], v["limits"]
    return Config(
        path=path,
        listen=parse_listen(v["listen"]),
        admin_listen=parse_listen(v["admin"]["listen"]),
        admin_hosts=tuple(v["admin"]["hosts"]),
        admin_read_token=v["admin"]["read_token"],
        backends=MappingProxyType(backends),
        fallback=v["fallback"],
        routes=tuple(routes),
        tracing=TracingSpec(tracing["sample"], tracing["response_header"], tracing["max_per_second"]),
        store=StoreSpec(store_dir, store["max_samples"], store["max_age"], store["max_traces"]),
        limits=Limits(**limits),
        digest=hashlib.sha256(raw).hexdigest(),
    )


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _backend(name: str, b: dict[str, Any], where: KeyPath, issues: Issues) -> Backend:
    parts = urlsplit(b["url"])
    if parts.scheme != "http":
        # TLS to upstreams is not offered yet; saying so beats silently speaking plain HTTP to port 443.
        issues.error(where + ("url",), "only http:// backends are supported")
    t = b["timeouts"] or {"connect": 2.0, "response": 30.0, "idle": 60.0}
    circuit = b["circuit"]
    try:
        port = parts.port or 80
    except ValueError:
        issues.error(where + ("url",), f"invalid port in {b['url']!r}")
        port = 80
    return Backend(
        name=name,
        url=b["url"],
        scheme=parts.scheme,
        host=parts.hostname or "",
        port=port,
        base_path=parts.path.rstrip("/"),
        timeouts=Timeouts(t["connect"], t["response"], t["idle"]),
        max_connections=b["max_connections"],
        max_concurrency=b["max_concurrency"],
        queue=b["queue"],
        circuit=CircuitSpec(circuit["failures"], circuit["cooldown"]) if circuit else None,
    )


def _route(r: dict[str, Any], order: int, fallback: str, backends: Mapping[str, Backend], where: KeyPath,
           issues: Issues, line: int) -> RouteSpec | None:
    from gateway.routing.matching import MatchSpec, PathMatch

    m = r["match"]
    kind = next(k for k in ("exact", "prefix", "template", "regex") if m["path"].get(k) is not None)
    try:
        path_match = PathMatch.create(kind, m["path"][kind])
    except ValueError as exc:
        issues.error(where + ("match", "path", kind), str(exc))
        return None
    methods = frozenset(x.upper() for x in m["methods"]) if m["methods"] else None
    headers = tuple(sorted((k.lower(), val) for k, val in (m["headers"] or {}).items()))
    match = MatchSpec(path_match, methods, headers)

    for key in ("to", "legacy"):
        if r[key] is not None and r[key] not in backends:
            issues.error(where + (key,), f"unknown backend {r[key]!r}; defined: {', '.join(backends)}"
                         + suggest(r[key], backends))
    stage = r["stage"]
    if stage != "legacy" and r["to"] is None:
        issues.error(where + ("stage",), f"stage {stage} needs `to:` naming the extracted backend")
    if stage == "canary" and r["canary"] is None:
        issues.error(where + ("stage",), "stage canary needs a `canary:` block with a weight or steps")
    legacy = r["legacy"] or fallback
    if r["to"] is not None and r["to"] == legacy:
        issues.warn(where + ("to",), f"`to` is the legacy backend {legacy!r}: every stage serves the same backend")

    shadow = _shadow(r["shadow"], where + ("shadow",), issues)
    canary = _canary(r["canary"])
    guard = _guard(r["guard"])
    if r["reverse_shadow"] and stage != "extracted":
        issues.warn(where + ("reverse_shadow",), "reverse_shadow only applies in stage extracted")
    return RouteSpec(
        name=r["name"], match=match, stage=stage, to=r["to"], legacy=legacy, priority=r["priority"],
        shadow=shadow, canary=canary, on_error=r["on_error"], guard=guard, reverse_shadow=r["reverse_shadow"],
        line=line, order=order, fingerprint=_fingerprint(r),
    )


def _fingerprint(r: dict[str, Any]) -> str:
    canonical = json.dumps(r, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _sticky(v: dict[str, Any] | None) -> StickyKey | None:
    if not v:
        return None
    return StickyKey("header", v["header"].lower()) if v.get("header") else StickyKey("cookie", v["cookie"])


def _shadow(v: dict[str, Any] | None, where: KeyPath, issues: Issues) -> ShadowSpec | None:
    if v is None:
        return None
    c = v["compare"] or {"ignore": [], "unordered": [], "tolerance": 0.0, "noise": 0.0, "headers": True}
    rules = _compile_compare(c, where + ("compare",), issues)
    return ShadowSpec(
        percent=v["percent"], key=_sticky(v["key"]), methods=frozenset(x.upper() for x in v["methods"]),
        max_body=v["max_body"], timeout=v["timeout"],
        compare=CompareSpec(tuple(c["ignore"]), tuple(_unordered_value(u) for u in c["unordered"]),
                            c["tolerance"], c["noise"], c["headers"], rules),
    )


def _unordered_value(u: dict[str, Any]) -> Any:
    return {"path": u["path"], "by": u["by"]} if u.get("by") else u["path"]


def _compile_compare(c: dict[str, Any], where: KeyPath, issues: Issues) -> Any:
    from gateway.compare.engine import RuleError, compile_rules

    try:
        return compile_rules(ignore=c["ignore"], unordered=[_unordered_value(u) for u in c["unordered"]],
                             tolerance=c["tolerance"], headers_compare=c["headers"])
    except RuleError as exc:
        issues.error(where + tuple(_split_rule_key(getattr(exc, "key", ""))), str(exc))
        return None


def _split_rule_key(key: str) -> list[str | int]:
    """``ignore[2]`` -> ["ignore", 2] so the error points at the list item's line."""
    out: list[str | int] = []
    for part in key.replace("]", "").split("["):
        if part:
            out.append(int(part) if part.isdigit() else part)
    return out


def _canary(v: dict[str, Any] | None) -> CanarySpec | None:
    if v is None:
        return None
    return CanarySpec(v["weight"], _sticky(v["sticky"]), tuple(v["steps"] or ()), v["interval"])


def _guard(v: dict[str, Any] | None) -> GuardSpec | None:
    if v is None:
        return None
    return GuardSpec(v["window"], v["min_requests"], v["max_error_rate"], v["max_mismatch_rate"],
                     v["max_p99_ratio"])


def _check_reachability(routes: list[RouteSpec], issues: Issues) -> None:
    from gateway.routing.matching import Entry, RouteTable

    table = RouteTable([Entry(r.name, r.match, r.order, r.priority) for r in routes])
    for hidden, by in table.unreachable():
        issues.warn(("routes", hidden.order),
                    f"can never match: every request it matches is taken first by route {by.name!r}")
