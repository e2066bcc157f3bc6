"""rollout: which side serves a request, and everything that moves a route between sides.

Owns the one decision (``decision``: stage, rollback pin, sticky split), ``controller.Rollout`` (live weight of a
stepped canary, steps, the guard, rollback and resume, the view every surface shows) and ``explain``. Every
surface asks it: the request path, the shadow, the admin API, the CLI and the console (through the API). May
import ``config``, ``routing``, ``stores`` and ``telemetry.stats``.
"""
