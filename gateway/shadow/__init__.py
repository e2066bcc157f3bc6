"""shadow: a copy of the request to the other side, in the background, and the comparison of the two answers.

Owns the tap that copies bytes beside the primary exchange, the bounded dispatcher, the pacer and noise learning.
May import ``config``, ``routing``, ``rollout`` (the sampling split), ``proxy``, ``compare``, ``stores`` and
``telemetry``. Nothing on the request path waits for it.
"""
