"""Services extracted from the legacy monolith, one package each (``python -m extracted.NAME``)."""
