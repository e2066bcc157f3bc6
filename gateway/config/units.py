"""Human units used in routes.yaml: durations (``250ms 5s 1m``), sizes (``512KiB 1MiB``), percentages (``10``/``10%``).

Each parser takes the raw YAML value and returns a plain number, or raises ``ValueError`` with a message that says
what was expected; the config validator adds file, line and key.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_SCALE = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    None: 1,
}

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")


def parse_duration(value: object) -> float:
    """Seconds from ``250ms``, ``5s``, ``1m``, ``1h``, ``7d`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 250ms, 5s or 1m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"expected a duration like 250ms, 5s or 1m, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_SCALE[m.group(2)]
    if seconds < 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``512KiB``, ``1MiB``, ``10MB`` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 512KiB or 1MiB, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError(f"expected a size like 512KiB or 1MiB, got {value!r}")
        unit = m.group(2).lower() if m.group(2) else None
        size = int(float(m.group(1)) * _SIZE_SCALE[unit])
    if size < 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def parse_percent(value: object) -> float:
    """A percentage in 0..100 from ``10``, ``10%`` or ``2.5%``; returned as a number of percent (not a fraction)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage like 10 or 10%, got {value!r}")
    if isinstance(value, int | float):
        pct = float(value)
    else:
        m = _PERCENT.match(str(value))
        if not m:
            raise ValueError(f"expected a percentage like 10 or 10%, got {value!r}")
        pct = float(m.group(1))
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"expected a percentage between 0 and 100, got {value!r}")
    return pct



_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_RATE_SCALE = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: object) -> float:
    """Events per second from ``100/s``, ``600/m`` or ``1000/h``; a bare number is per second."""
    if isinstance(value, bool):
        raise ValueError(f"expected a rate like 100/s or 600/m, got {value!r}")
    if isinstance(value, int | float):
        rate = float(value)
    else:
        m = _RATE.match(str(value))
        if not m:
            raise ValueError(f"expected a rate like 100/s or 600/m, got {value!r}")
        rate = float(m.group(1)) / _RATE_SCALE[m.group(2)]
    if rate <= 0:
        raise ValueError(f"expected a rate above zero, got {value!r} (to stop admitting, set `paused: true`)")
    return rate
