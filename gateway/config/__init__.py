"""config: routes.yaml from bytes to frozen dataclasses.

Owns the schema (every key, its type and default, in one place), units (durations, sizes, percentages) and the
validator that ``strangler check`` and live reload share. Imports nothing of the gateway but ``gateway.errors``.
"""
