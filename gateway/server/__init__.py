"""server: the public listener and its request handler.

Owns the HTTP/1.1 server settings (``wire``), the screen every client byte passes before aiohttp's parser
(``screen``, ``grammar``), the listener's TLS certificates (``tls``), and ``PublicHandler``, which takes one request
from the wire through routing, the waiting room (routes with ``admission:`` only), the rollout decision, the proxy
and the shadow tap, and records it. May import everything below it: ``config``, ``routing``, ``admission``,
``rollout``, ``proxy``, ``shadow``, ``telemetry``.
"""
