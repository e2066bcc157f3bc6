"""routing: which route a request belongs to.

Owns path normalisation, the compiled route trie and the ``Table`` of one config generation (built once, swapped
whole on reload). May import ``config``.
"""
