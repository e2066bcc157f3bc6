"""routes.yaml version 1, key by key: the schema tables (types, units, defaults, descriptions) that validate the
file and that ``strangler schema`` renders as JSON Schema.
"""

from __future__ import annotations

from typing import Any

from gateway.config.model import STAGES
from gateway.config.schema import (
    ADMIN_ACCESS,
    SECTION_DEFAULTS,
    WIRE_LIMITS,
    Bool,
    Duration,
    Field,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    Percent,
    Rate,
    Size,
    Str,
)

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
HTTP_METHOD = Str(pattern=r"[A-Za-z]{1,20}", expected="an HTTP method such as GET")
LISTEN = Str(pattern=r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}", expected="HOST:PORT, e.g. 127.0.0.1:8080")


STICKY = Obj({"header": Field(Str(min_length=1)), "cookie": Field(Str(min_length=1)),
              "param": Field(Str(min_length=1, description="a parameter of the route's path template (or a named "
                                                           "group of its regex): one entity, one side"))},
             exactly_one=("header", "cookie", "param"),
             description="Hash this request header, cookie or path parameter so the same user (or entity) always "
                         "gets the same answer.")

TIMEOUTS = Obj({
    "connect": Field(Duration("TCP connect timeout"), default=2.0),
    "response": Field(Duration("time from sending the request to the response headers"), default=30.0),
    "idle": Field(Duration("longest gap between two body reads; pooled connections idle longer are closed"),
                  default=60.0),
})

BACKEND_TLS = Obj({
    "ca": Field(Str(min_length=1, description="PEM file of the CA(s) to trust instead of the system CAs")),
    "cert": Field(Str(min_length=1, description="PEM client certificate chain for mutual TLS (with `key`)")),
    "key": Field(Str(min_length=1, description="PEM private key of `cert`")),
    "server_name": Field(Str(pattern=r"[A-Za-z0-9*]([A-Za-z0-9.*-]{0,252})", expected="a host name",
                             description="SNI and the name verified, if not the URL's host")),
}, description="TLS to an https:// backend; its certificate is always verified.")

LISTENER_TLS = Obj({
    "cert": Field(Str(min_length=1, description="PEM certificate chain"), required=True),
    "key": Field(Str(min_length=1, description="PEM private key"), required=True),
}, description="Serve the public listener over HTTPS; the files are re-read when they change on disk.")

BACKEND = Obj({
    "url": Field(Str(pattern=r"https?://[^\s/?#]+(/[^\s?#]*)?",
                     expected="an http:// or https:// URL such as http://127.0.0.1:8001"), required=True),
    "tls": Field(BACKEND_TLS),
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
    "compare": Field(COMPARE, default=SECTION_DEFAULTS),
})

CANARY = Obj({
    "weight": Field(Percent("share of users sent to the extracted backend"), default=0.0),
    "sticky": Field(STICKY),
    "steps": Field(ListOf(Percent(), min_items=1, description="progressive weights, advanced while healthy")),
    "interval": Field(Duration("time between two steps"), default=300.0),
})

SYNC = Obj({
    "methods": Field(ListOf(HTTP_METHOD, min_items=1, description="writes mirrored to the other side"),
                     default=["POST", "PUT", "PATCH", "DELETE"]),
    "max_body": Field(Size("a write with a larger body is refused (413) rather than answered but not mirrored"),
                      default=1024 * 1024),
    "verify": Field(Obj({"method": Field(HTTP_METHOD, default="GET"),
                         "path": Field(Str(min_length=1, description="the resource to read on both sides; "
                                                                     "{name} takes the write's path parameter"),
                                       required=True)},
                        description="after a mirrored write, read this from both sides and compare")),
}, description="Mirror the writes the answering side completed (2xx) to the other side, through a durable journal.")

GUARD = Obj({
    "window": Field(Duration("sliding window"), default=60.0),
    "min_requests": Field(Int(minimum=1, description="fewer requests in the window: inconclusive"), default=50),
    "max_error_rate": Field(Percent(), default=2.0),
    "max_mismatch_rate": Field(Percent()),
    "max_p99_ratio": Field(Num(minimum=0.0, description="extracted p99 / legacy p99")),
})

ADMISSION = Obj({
    "rate": Field(Rate("new visitors let in per second (100/s, 600/m)"), required=True),
    "session": Field(Duration("an admitted visitor passes this long without queueing again"), default=600.0),
    "queue": Field(Int(minimum=1, description="at most this many wait; beyond that: 503 full"), default=100000),
    "grace": Field(Duration("a waiting visitor who stops polling this long loses the place"), default=60.0),
    "paused": Field(Bool("admit nobody new for now; the line keeps its order"), default=False),
    "on_store_down": Field(Str(enum=("open", "closed"), description="when the queue's store is unreachable: "
                                   "let everyone through (open) or answer 503 (closed)"), default="open"),
}, description="A waiting room: admit visitors at a fixed rate, first come first served.")

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
    "admission": Field(ADMISSION),
    "sync": Field(SYNC),
})

ROUTES_SCHEMA = Obj({
    "version": Field(Int(minimum=1, maximum=1), required=True),
    "listen": Field(LISTEN, default="127.0.0.1:8080"),
    "admin": Field(Obj({"listen": Field(LISTEN, default="127.0.0.1:9901"), **ADMIN_ACCESS}),
                   default=SECTION_DEFAULTS),
    "tls": Field(LISTENER_TLS),
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
                        "max_traces": Field(Int(minimum=10), default=2000),
                        "url": Field(Str(pattern=r"postgres(ql)?://([^:@/\s]+@)?[^\s@/]+(/[^\s]*)?",
                                         expected="a postgresql://USER@HOST:PORT/DATABASE URL without a "
                                                  "password (the password comes from PGPASSWORD or "
                                                  "store.password_file)",
                                         secret=True,
                                         description="a PostgreSQL database shared by a fleet of gateways "
                                                     "(STRANGLER_STORE_URL overrides it); absent: SQLite in dir")),
                        "password_file": Field(Str(min_length=1, description="a file holding the PostgreSQL "
                                                                             "password (else PGPASSWORD)"))}),
                     default=SECTION_DEFAULTS),
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
