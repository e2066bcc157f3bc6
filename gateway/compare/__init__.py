"""compare: two HTTP answers in, a verdict and the differing fields out.

Pure functions over captured responses (status, headers, JSON or text bodies), with rules compiled once per
config generation. Imports nothing of the gateway.
"""
