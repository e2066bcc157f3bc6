"""runtime: the composition root.

``Gateway`` builds the collaborators once per process, hands each what it needs, starts and stops them; the
reloader swaps config generations; ``launch`` runs worker processes. Imports every capability package; only
``cli`` imports it.
"""
