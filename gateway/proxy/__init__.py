"""proxy: one exchange with a backend.

Owns header rules (hop-by-hop, X-Forwarded-*), the keep-alive upstream pool, circuit breakers and concurrency
limits, and streaming a request and its response between client and backend. May import ``config`` and
``errors`` only.
"""
