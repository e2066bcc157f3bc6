"""admin: the admin listener: JSON API, embedded OTLP receiver, Prometheus metrics and the web console.

Handlers receive the collaborators they read through their constructors; none reaches through the gateway. May
import every capability package below it, never ``runtime`` or ``cli``.
"""
