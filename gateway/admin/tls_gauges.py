"""The TLS metric families, read from the upstream TLS clients at scrape time: handshakes with each https://
backend (full or resumed) and failed handshakes by cause."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from gateway.proxy.upstream import Upstreams


class TLSGauges:
    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    def __call__(self) -> Iterator[Metric]:
        handshakes = CounterMetricFamily("strangler_backend_tls_handshakes",
                                         "TLS handshakes with a backend, by whether a session was resumed",
                                         labels=["backend", "resumed"])
        failures = CounterMetricFamily("strangler_backend_tls_failures",
                                       "Failed TLS handshakes with a backend, by cause", labels=["backend", "cause"])
        totals: dict[tuple[str, str], int] = {}
        failed: dict[tuple[str, str], int] = {}
        for client in self.upstreams.tls_clients():
            name = client.backend.name
            for resumed, n in (("true", client.resumed), ("false", client.handshakes - client.resumed)):
                totals[(name, resumed)] = totals.get((name, resumed), 0) + n
            for cause, n in client.failures.items():
                failed[(name, cause)] = failed.get((name, cause), 0) + n
        for labels, n in sorted(totals.items()):
            handshakes.add_metric(list(labels), n)
        for labels, n in sorted(failed.items()):
            failures.add_metric(list(labels), n)
        yield handshakes
        yield failures
