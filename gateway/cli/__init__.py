"""cli: the ``strangler`` command, its terminal rendering and the demo.

Talks to a running gateway through the admin API and shows what the API computed, never recomputing it. On top:
may import anything.
"""
