"""telemetry: what the gateway tells about itself.

Owns per-route statistics windows (``stats``, a leaf module others read), the request span and its store hand-off,
Prometheus counters, the OTLP codec and the per-request ``Recorder`` (statistics, span, metrics, access log). May
import ``config``, ``errors``, ``routing``, ``stores``, ``observability``, and the value types of
``rollout.decision`` and ``proxy.forward`` that it records.
"""
