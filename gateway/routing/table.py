"""The route table of one config generation: built once from a ``Config``, never changed, swapped whole on reload.

It resolves names to backends and wraps every route spec in a ``Route`` so that the request path only does
dictionary and attribute lookups.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import Backend, Config, RouteSpec
from gateway.routing.index import RouteTable
from gateway.routing.matching import MatchSpec, PathMatch
from gateway.routing.paths import route_path
from gateway.routing.precedence import Entry

FALLBACK_ROUTE = "fallback"
NO_PARAMS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    spec: RouteSpec | None      # None for the synthetic fallback route
    stage: str
    legacy: Backend
    to: Backend | None
    # The rollout's decision by pin state, for the stages that depend on nothing else (gateway.rollout): made
    # once per route and config generation, since a reload builds new routes.
    decisions: dict[bool, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_fallback(self) -> bool:
        return self.spec is None


class Table:
    __slots__ = ("config", "generation", "loaded_at", "routes", "by_name", "fallback", "_matcher", "_strip")

    def __init__(self, config: Config, generation: int) -> None:
        self.config = config
        self.generation = generation
        self.loaded_at = time.time()
        backends = config.backends
        self.routes: tuple[Route, ...] = tuple(_route(spec, backends) for spec in config.routes)
        self.by_name: Mapping[str, Route] = {r.name: r for r in self.routes}
        self.fallback = Route(FALLBACK_ROUTE, None, "legacy", backends[config.fallback], None)
        self._matcher = RouteTable(
            [Entry(r.name, r.spec.match, r.spec.order, r.spec.priority, r) for r in self.routes if r.spec])
        # limits.path_parameters: strip matches on the path a Java server would route (gateway.routing.paths).
        self._strip = config.limits.path_parameters == "strip"

    def resolve(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[Route, Mapping[str, str]]:
        """The route for a request whose path is already normalised (the fallback when nothing matches), and the
        parameters its path pattern captured (a sticky canary by entity hashes one)."""
        if self._strip and ";" in path:
            path = route_path(path)
        m = self._matcher.match(method, path, headers)
        if m is None:
            return self.fallback, NO_PARAMS
        return m.entry.target, m.params  # type: ignore[return-value]

    def explain(self, method: str, path: str, headers: Mapping[str, str]) -> list[object]:
        if self._strip and ";" in path:
            path = route_path(path)
        return self._matcher.explain(method, path, headers)


class TableRef:
    """The one value a reload replaces: the table every new request reads (requests already running keep the one
    they started with)."""

    __slots__ = ("current",)

    def __init__(self, table: Table) -> None:
        self.current = table


def _route(spec: RouteSpec, backends: Mapping[str, Backend]) -> Route:
    return Route(spec.name, spec, spec.stage, backends[spec.legacy], backends[spec.to] if spec.to else None)


def describe_match(match: MatchSpec) -> str:
    """``template /api/products/{id}/reviews [GET,POST] X-Tenant=acme`` for tables and explanations."""
    path: PathMatch = match.path
    text = f"{path.kind} {path.value}"
    if match.methods:
        text += f" [{','.join(sorted(match.methods))}]"
    for name, value in match.headers:
        text += f" {name}={value}"
    return text
