"""config: routes.yaml from bytes to frozen dataclasses.

Owns the schema (every key, its type and default, once: ``document``), the dataclasses (``model``), units, and the
validator that ``strangler check`` and live reload share (``parse``). It compiles what a route carries while it
loads, so it imports two leaf modules that import nothing of the gateway: ``routing.matching`` (path matchers) and
``compare`` (compare rules). Nothing else.
"""
