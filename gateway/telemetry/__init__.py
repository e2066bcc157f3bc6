"""telemetry: what the gateway tells about itself.

Owns per-route statistics windows, the request span and its store hand-off, Prometheus metrics, the OTLP codec and
the per-request recorder (span, metrics, access log). May import ``config``, ``routing``, ``stores`` and
``observability``; never rollout, proxy or anything above.
"""
