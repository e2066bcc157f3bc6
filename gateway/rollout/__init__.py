"""rollout: which side serves a request, and everything that moves a route between sides.

Owns the one decision (stage, rollback pin, sticky canary split, live weight of a stepped canary), progressive
steps, the guard, rollback and resume, and ``explain``. Every surface asks it: the request path, the shadow, the
admin API, the CLI and the console (through the API). May import ``config``, ``routing``, ``stores`` and
``telemetry``.
"""
