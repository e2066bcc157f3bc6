"""server: the public listener and its request handler.

Owns the HTTP/1.1 server settings (``wire``), the listener's TLS certificates (``tls``) and ``PublicHandler``, which takes one request from the wire through
routing, the rollout decision, the proxy and the shadow tap, and records it. May import everything below it:
``config``, ``routing``, ``rollout``, ``proxy``, ``shadow``, ``telemetry``.
"""
