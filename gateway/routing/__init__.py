"""routing: which route a request belongs to, and the table a reload replaces.

Owns path normalisation, the compiled route trie (``matching``, ``precedence``, ``index``: leaf modules that import
nothing of the gateway), the ``Table`` of one config generation with ``TableRef`` (the one value a reload swaps)
and the reloader. May import ``config``.
"""
