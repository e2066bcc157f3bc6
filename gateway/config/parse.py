"""routes.yaml version 1: parse, validate, and build the immutable configuration.

Flow: one pass of PyYAML's *safe* loader (its C implementation when installed) composes the node tree, which gives
the line of every key, and constructs the plain values from that same tree (exactly what ``yaml.safe_load`` does,
without parsing the file twice). The declarative schema in ``ROUTES_SCHEMA`` (:mod:`gateway.config.document`)
validates and converts units; the builder then resolves cross-references (backend names, stages needing a target)
and compiles what can be compiled once (path matchers, compare rules). Any problem is reported as
``FILE:LINE: route 'NAME': key 'a.b': message``.

The result, ``Config`` (:mod:`gateway.config.model`), is a tree of frozen dataclasses: a reload builds a new one
and swaps it whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.config.document import ROUTES_SCHEMA, SHADOW
from gateway.config.model import (
    AdmissionSpec,
    Backend,
    CanarySpec,
    CircuitSpec,
    CompareSpec,
    Config,
    GuardSpec,
    Limits,
    RouteSpec,
    ShadowSpec,
    StickyKey,
    StoreSpec,
    SyncSpec,
    Timeouts,
    TracingSpec,
    VerifySpec,
)
from gateway.config.schema import MISSING, Issues, KeyPath, Problem, suggest
from gateway.config.tls import backend_tls, listener_tls


class ConfigError(Exception):
    """routes.yaml could not be loaded; ``problems`` are ready-to-print ``FILE:LINE: message`` lines."""

    def __init__(self, problems: list[str], warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings or []


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
    base = path.resolve().parent   # relative file names (store.dir, certificates) are beside routes.yaml
    backends = {name: _backend(name, b, ("backends", name), issues, base) for name, b in v["backends"].items()}
    listener = listener_tls(v["tls"], base, issues)
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
        store=StoreSpec(store_dir, store["max_samples"], store["max_age"], store["max_traces"], store["url"],
                        _relative(path, store["password_file"])),
        limits=Limits(**limits),
        digest=hashlib.sha256(raw).hexdigest(),
        tls=listener,
    )


def _relative(path: Path, value: str | None) -> Path | None:
    """A path from routes.yaml, relative to the file's directory."""
    if value is None:
        return None
    found = Path(value)
    return found if found.is_absolute() else path.resolve().parent / found


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _backend(name: str, b: dict[str, Any], where: KeyPath, issues: Issues, base: Path) -> Backend:
    parts = urlsplit(b["url"])
    t = b["timeouts"] or {"connect": 2.0, "response": 30.0, "idle": 60.0}
    circuit = b["circuit"]
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
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
        tls=backend_tls(b["tls"], parts.scheme, base, where, issues),
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
    _check_params(r, path_match, where, issues)
    sync = _sync(r["sync"])
    guard = _guard(r["guard"])
    if r["reverse_shadow"] and stage != "extracted":
        issues.warn(where + ("reverse_shadow",), "reverse_shadow only applies in stage extracted")
    _stage_leftovers(r, stage, where, issues)
    return RouteSpec(
        name=r["name"], match=match, stage=stage, to=r["to"], legacy=legacy, priority=r["priority"],
        shadow=shadow, canary=canary, on_error=r["on_error"], guard=guard, reverse_shadow=r["reverse_shadow"],
        line=line, order=order, fingerprint=_fingerprint(r), admission=_admission(r["admission"]), sync=sync,
    )


def _stage_leftovers(r: dict[str, Any], stage: str, where: KeyPath, issues: Issues) -> None:
    """Blocks left from another stage do nothing, or not what they did there: say so rather than let the file
    suggest a canary or a guard that is not running."""
    if r["canary"] is not None and stage != "canary":
        issues.warn(where + ("canary",), f"canary: only applies in stage canary; in stage {stage} it has no effect")
    if r["guard"] is not None and stage == "legacy":
        issues.warn(where + ("guard",), "guard: has nothing to judge in stage legacy (no new side)")
    elif r["guard"] is not None and stage == "shadow":
        issues.warn(where + ("guard",), "guard: in stage shadow judges the shadow copies (their errors and "
                                        "mismatches), not users' traffic; failing it stops the shadow")


def _fingerprint(r: dict[str, Any]) -> str:
    # The waiting room is left out: retuning its rate is not a new rollout intent and must not clear a rollback.
    canonical = json.dumps({k: v for k, v in r.items() if k != "admission"}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _sticky(v: dict[str, Any] | None) -> StickyKey | None:
    if not v:
        return None
    if v.get("header"):
        return StickyKey("header", v["header"].lower())
    return StickyKey("param", v["param"]) if v.get("param") else StickyKey("cookie", v["cookie"])


def _check_params(r: dict[str, Any], path_match: Any, where: KeyPath, issues: Issues) -> None:
    """A sticky path parameter, and the parameters a ``sync.verify`` path uses, must be ones the route's path
    pattern captures; otherwise every request would silently fall back to a random draw."""
    names = tuple(path_match.regex.groupindex) if path_match.regex is not None else tuple(path_match.param_names)
    sticky = (r["canary"] or {}).get("sticky") or {}
    if sticky.get("param") and sticky["param"] not in names:
        issues.error(where + ("canary", "sticky", "param"),
                     f"the route's path has no parameter {sticky['param']!r}; it has: "
                     f"{', '.join(names) or 'none (use a template such as /api/likes/{product_id})'}")
    if ((r["shadow"] or {}).get("key") or {}).get("param"):
        issues.error(where + ("shadow", "key", "param"), "a shadow sample key is a header or a cookie")
    verify = (r["sync"] or {}).get("verify")
    if verify:
        import re

        for name in re.findall(r"\{([^{}]+)\}", verify["path"]):
            if name not in names:
                issues.error(where + ("sync", "verify", "path"),
                             f"{{{name}}} is not a parameter of the route's path; it has: "
                             f"{', '.join(names) or 'none'}")


def _sync(v: dict[str, Any] | None) -> SyncSpec | None:
    if v is None:
        return None
    verify = v["verify"]
    return SyncSpec(frozenset(x.upper() for x in v["methods"]), v["max_body"],
                    VerifySpec(verify["method"].upper(), verify["path"]) if verify else None)


def _shadow(v: dict[str, Any] | None, where: KeyPath, issues: Issues) -> ShadowSpec | None:
    if v is None:
        return None
    c = v["compare"]
    rules = _compile_compare(c, where + ("compare",), issues)
    return ShadowSpec(
        percent=v["percent"], key=_sticky(v["key"]), methods=frozenset(x.upper() for x in v["methods"]),
        max_body=v["max_body"], timeout=v["timeout"],
        compare=CompareSpec(tuple(c["ignore"]), tuple(_unordered_value(u) for u in c["unordered"]),
                            c["tolerance"], c["noise"], c["headers"], rules),
    )


def default_shadow() -> ShadowSpec:
    """What ``shadow:`` means when a route does not say (a reverse shadow, a replay): the schema's defaults."""
    issues = Issues()
    spec = _shadow(SHADOW.check({}, ("shadow",), issues), ("shadow",), issues)
    assert spec is not None and not issues.errors, issues.errors
    return spec


def _unordered_value(u: dict[str, Any]) -> Any:
    return {"path": u["path"], "by": u["by"]} if u.get("by") else u["path"]


def _compile_compare(c: dict[str, Any], where: KeyPath, issues: Issues) -> Any:
    from gateway.compare.rules import RuleError, compile_rules

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


def _admission(v: dict[str, Any] | None) -> AdmissionSpec | None:
    if v is None:
        return None
    return AdmissionSpec(v["rate"], v["session"], v["queue"], v["grace"], v["paused"], v["on_store_down"])


def _check_reachability(routes: list[RouteSpec], issues: Issues) -> None:
    from gateway.routing.index import RouteTable
    from gateway.routing.precedence import Entry

    table = RouteTable([Entry(r.name, r.match, r.order, r.priority) for r in routes])
    for hidden, by in table.unreachable():
        issues.warn(("routes", hidden.order),
                    f"can never match: every request it matches is taken first by route {by.name!r}")
