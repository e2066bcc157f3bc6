"""Side-by-side benchmark of the gateway, nginx and a naive aiohttp proxy (see README.md in this directory)."""
