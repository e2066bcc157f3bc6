"""A small declarative schema for routes.yaml: one description that both validates a parsed document and renders a
JSON Schema for editors (`strangler schema`), so the two can never disagree.

Validation walks the YAML value and the schema together, converts units (durations to seconds, sizes to bytes,
percentages to numbers), and collects every problem with its key path instead of stopping at the first one; the
config module turns key paths into ``FILE:LINE`` using the YAML node marks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import units

KeyPath = tuple[str | int, ...]


@dataclass
class Problem:
    path: KeyPath
    message: str
    severity: str = "error"


class Issues:
    """Collects problems during one validation pass."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(path, message, "warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


_MISSING = object()


class Node:
    description: str = ""

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _doc(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.description:
            schema["description"] = self.description
        return schema


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


@dataclass
class Str(Node):
    description: str = ""
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    expected: str = ""
    min_length: int = 0

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        if not isinstance(value, str):
            issues.error(path, f"expected {self.expected or 'a string'}, got {_type_name(value)}")
            return _MISSING
        if self.enum is not None and value not in self.enum:
            issues.error(path, f"expected one of {', '.join(self.enum)}, got {value!r}")
            return _MISSING
        if len(value) < self.min_length:
            issues.error(path, f"expected {self.expected or 'a non-empty string'}, got {value!r}")
            return _MISSING
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            issues.error(path, f"expected {self.expected or 'a string matching ' + self.pattern}, got {value!r}")
            return _MISSING
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$"
        if self.min_length:
            schema["minLength"] = self.min_length
        return self._doc(schema)


@dataclass
class Int(Node):
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            issues.error(path, f"expected a whole number, got {_type_name(value)} {value!r}")
            return _MISSING
        if self.minimum is not None and value < self.minimum:
            issues.error(path, f"expected a number >= {self.minimum}, got {value}")
            return _MISSING
        if self.maximum is not None and value > self.maximum:
            issues.error(path, f"expected a number <= {self.maximum}, got {value}")
            return _MISSING
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return self._doc(schema)


@dataclass
class Num(Node):
    description: str = ""
    minimum: float | None = None

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            issues.error(path, f"expected a number, got {_type_name(value)} {value!r}")
            return _MISSING
        if self.minimum is not None and value < self.minimum:
            issues.error(path, f"expected a number >= {self.minimum}, got {value}")
            return _MISSING
        return float(value)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        return self._doc(schema)


@dataclass
class Bool(Node):
    description: str = ""

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        if not isinstance(value, bool):
            issues.error(path, f"expected true or false, got {value!r}")
            return _MISSING
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"type": "boolean"})


@dataclass
class Unit(Node):
    """A value in human units, converted by one of the ``gateway.units`` parsers."""

    parse: Callable[[Any], Any]
    pattern: str
    example: str
    description: str = ""

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        try:
            return self.parse(value)
        except ValueError as exc:
            issues.error(path, str(exc))
            return _MISSING

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"anyOf": [{"type": "number", "minimum": 0},
                                    {"type": "string", "pattern": self.pattern}],
                          "examples": [self.example]})


def Duration(description: str = "") -> Unit:  # noqa: N802 - reads like a type in the schema tables
    return Unit(units.parse_duration, r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$", "5s", description)


def Size(description: str = "") -> Unit:  # noqa: N802
    return Unit(units.parse_size, r"^\s*\d+(\.\d+)?\s*([KMG]i?B|B)?\s*$", "1MiB", description)


def Percent(description: str = "") -> Unit:  # noqa: N802
    return Unit(units.parse_percent, r"^\s*\d+(\.\d+)?\s*%?\s*$", "10%", description)


@dataclass
class ListOf(Node):
    item: Node
    description: str = ""
    min_items: int = 0

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        if not isinstance(value, list):
            issues.error(path, f"expected a list, got {_type_name(value)}")
            return _MISSING
        if len(value) < self.min_items:
            issues.error(path, f"expected at least {self.min_items} item(s)")
            return _MISSING
        out = [self.item.check(v, path + (i,), issues) for i, v in enumerate(value)]
        return _MISSING if any(v is _MISSING for v in out) else out

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.json_schema()}
        if self.min_items:
            schema["minItems"] = self.min_items
        return self._doc(schema)


@dataclass
class MapOf(Node):
    """A mapping with free keys (backend names, header names)."""

    value: Node
    description: str = ""
    key_pattern: str | None = None
    key_expected: str = ""

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        if not isinstance(value, dict):
            issues.error(path, f"expected a mapping, got {_type_name(value)}")
            return _MISSING
        out = {}
        ok = True
        for k, v in value.items():
            if not isinstance(k, str) or (self.key_pattern and not re.fullmatch(self.key_pattern, k)):
                issues.error(path + (str(k),), f"expected {self.key_expected or 'a string key'}, got {k!r}")
                ok = False
                continue
            out[k] = self.value.check(v, path + (k,), issues)
            ok = ok and out[k] is not _MISSING
        return out if ok else _MISSING

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value.json_schema()}
        if self.key_pattern:
            schema["propertyNames"] = {"pattern": f"^(?:{self.key_pattern})$"}
        return self._doc(schema)


# A Field default meaning "an absent mapping reads as the mapping of its own defaults" (top-level sections such
# as `limits:`), so the code reading the config never repeats the defaults the schema already declares.
SECTION_DEFAULTS: Any = object()


@dataclass
class Field:
    node: Node
    required: bool = False
    default: Any = None


@dataclass
class Obj(Node):
    """A mapping with known keys. Unknown keys are errors: a typo must never be silently ignored."""

    fields: Mapping[str, Field]
    description: str = ""
    exactly_one: tuple[str, ...] = ()
    shorthand: Node | None = None          # e.g. `unordered: "$.items"` for `{path: "$.items"}`
    shorthand_key: str = ""
    extra_check: Callable[[dict[str, Any], KeyPath, Issues], None] | None = field(default=None, repr=False)

    def check(self, value: Any, path: KeyPath, issues: Issues) -> Any:
        if self.shorthand is not None and not isinstance(value, dict):
            inner = self.shorthand.check(value, path, issues)
            return _MISSING if inner is _MISSING else self._defaults({self.shorthand_key: inner})
        if not isinstance(value, dict):
            issues.error(path, f"expected a mapping with keys {', '.join(self.fields)}, got {_type_name(value)}")
            return _MISSING
        out: dict[str, Any] = {}
        ok = True
        for k, v in value.items():
            spec = self.fields.get(k) if isinstance(k, str) else None
            if spec is None:
                issues.error(path + (str(k),), f"unknown key {k!r}; expected one of: {', '.join(self.fields)}"
                             + suggest(str(k), self.fields))
                ok = False
                continue
            out[k] = spec.node.check(v, path + (k,), issues)
            ok = ok and out[k] is not _MISSING
        for k, spec in self.fields.items():
            if spec.required and k not in value:
                issues.error(path, f"missing required key {k!r}")
                ok = False
        if self.exactly_one:
            present = [k for k in self.exactly_one if k in value]
            if len(present) != 1:
                issues.error(path, f"expected exactly one of {', '.join(self.exactly_one)}, got "
                             f"{', '.join(present) if present else 'none'}")
                ok = False
        if ok and self.extra_check is not None:
            before = len(issues.errors)
            self.extra_check(out, path, issues)
            ok = len(issues.errors) == before
        return self._defaults(out) if ok else _MISSING

    def _defaults(self, out: dict[str, Any]) -> dict[str, Any]:
        for k, spec in self.fields.items():
            if k not in out:
                if spec.default is SECTION_DEFAULTS:
                    assert isinstance(spec.node, Obj)
                    out[k] = spec.node._defaults({})
                else:
                    out[k] = spec.default
        return out

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {k: f.node.json_schema() for k, f in self.fields.items()},
            "additionalProperties": False,
        }
        required = [k for k, f in self.fields.items() if f.required]
        if required:
            schema["required"] = required
        if self.exactly_one:
            schema["oneOf"] = [{"required": [k]} for k in self.exactly_one]
        if self.shorthand is not None:
            schema = {"anyOf": [self.shorthand.json_schema(), schema]}
        return self._doc(schema)


def suggest(key: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


MISSING = _MISSING


# --------------------------------------------------------------------------------------------------------------
# Keys of routes.yaml sections about what the gateway accepts from clients, each with its one default
# --------------------------------------------------------------------------------------------------------------

MIN_REQUEST_HEAD = 1024
MAX_REQUEST_HEAD = 1024 * 1024


def _request_head_size(value: Any) -> int:
    size = units.parse_size(value)
    if not MIN_REQUEST_HEAD <= size <= MAX_REQUEST_HEAD:
        raise ValueError(f"expected a size between 1KiB and 1MiB, got {value!r}")
    return size


# `limits:` keys that bound and normalise what a client may send (the rest of `limits` is in the config model).
WIRE_LIMITS: dict[str, Field] = {
    # Envoy's default is 60 KiB, nginx's 4 x 8 KiB buffers: 64 KiB keeps every real browser and API client well
    # inside while a client can no longer make the gateway hold (and a backend receive) megabytes of fields.
    "max_request_head": Field(Unit(_request_head_size, r"^\s*\d+(\.\d+)?\s*([KMG]i?B|B)?\s*$", "64KiB",
                                   "the request line and header fields together; a larger head gets 431"),
                              default=64 * 1024),
    "underscores_in_headers": Field(Str(enum=("drop", "refuse", "pass"), description=(
        "header names with '_' (X_User): CGI-style backends read them as their dashed twins (X-User), so by "
        "default they are dropped before forwarding, as nginx does; refuse answers 400; pass forwards them")),
        default="drop"),
    "path_parameters": Field(Str(enum=("strip", "refuse", "keep"), description=(
        "';' parameters in path segments (/admin;x=1, /a/..;/admin), which Java servers (Tomcat, Jetty, Spring) "
        "remove before routing: strip matches routes on the path without them and resolves '..;' as '..'; "
        "refuse answers 400 to any path with ';'; keep treats ';' as an ordinary character")),
        default="strip"),
}

HOST_NAME = Str(pattern=r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))(:\d{1,5})?",
                expected="a host name or address, optionally with :PORT, e.g. strangler.internal or 10.0.0.5:9901")

# `admin:` keys that say who may talk to the admin listener (its address, `listen`, is in the config model).
ADMIN_ACCESS: dict[str, Field] = {
    "hosts": Field(ListOf(HOST_NAME, description=(
        "more Host values the admin listener answers, besides its own address, localhost, 127.0.0.1 and [::1] "
        "(any other Host gets 421, so a web page cannot reach it by DNS rebinding); a name without a port "
        "matches it with any port")), default=[]),
    "read_token": Field(Bool("reads (the API's GETs and /metrics) need the admin token too, not only changes"),
                        default=False),
}
