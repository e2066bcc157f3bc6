"""Route names in admin requests: a name that is not a route of the served table is a 404 that lists the real ones.

Every endpoint that takes a route name (in the path or as a ``route=`` filter) asks here, so a typo never reads as
"nothing recorded" (an empty table and exit 0 in the CLI).
"""

from __future__ import annotations

from aiohttp import web

from gateway.routing.table import FALLBACK_ROUTE, Route, TableRef


def route_or_404(tables: TableRef, name: str) -> Route:
    table = tables.current
    route = table.by_name.get(name)
    if route is None and name == FALLBACK_ROUTE:
        return table.fallback
    if route is None:
        raise web.HTTPNotFound(text=f"no route named {name!r}; routes: {', '.join([*table.by_name, FALLBACK_ROUTE])}")
    return route


def route_filter(tables: TableRef, request: web.Request) -> str | None:
    """The ``route=`` query parameter, checked: None when absent, else the name of a real route."""
    name = request.query.get("route") or None
    if name is not None:
        route_or_404(tables, name)
    return name
