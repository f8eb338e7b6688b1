"""Durations written as a number and a unit: ``"90s"``, ``"30m"``, ``"1.5h"``, ``"3d"``, ``"2w"``.

One parser for the whole code base: config thresholds (``monitoring.sync_sla``) take decimals,
API key lifetimes take whole numbers only. Either way a duration is positive and at most
:data:`MAX_DURATION_DAYS` days, so no input can overflow a date.

>>> parse_duration("1.5h")
5400.0
>>> parse_duration("2w", whole=True)
1209600.0
>>> parse_duration("1.5h", whole=True)
Traceback (most recent call last):
...
bastion.core.durations.DurationError: duration '1.5h': use a whole number and a unit s, m, h, d or w (e.g. '12h')
"""
from __future__ import annotations

import math
import re

__all__ = ["MAX_DURATION_DAYS", "UNIT_SECONDS", "DurationError", "DurationTooLong", "parse_duration"]

MAX_DURATION_DAYS = 3650  # the longest duration any input may give (about 10 years)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WHOLE = re.compile(r"^\s*(\d{1,18})\s*([smhdw])\s*$")


class DurationError(ValueError):
    """A text that is not a positive number followed by a unit s, m, h, d or w."""


class DurationTooLong(DurationError):
    """A well-formed duration longer than :data:`MAX_DURATION_DAYS` days."""


def parse_duration(text: str, *, whole: bool = False) -> float:
    """Seconds in ``text``, a positive number and a unit (``s``, ``m``, ``h``, ``d`` or ``w``).

    Args:
        text: e.g. ``"12h"``; decimals (``"1.5h"``) unless ``whole``.
        whole: accept whole numbers only (lowercase units, blanks allowed around the number).

    Returns:
        The duration in seconds.

    Raises:
        DurationTooLong: longer than :data:`MAX_DURATION_DAYS` days.
        DurationError: anything else that is not a positive duration (a ``ValueError``).
    """
    value, unit = _whole_parts(text) if whole else _decimal_parts(text)
    if not math.isfinite(value) or value <= 0:
        raise DurationError(f"duration {text!r} must be positive")
    seconds = float(value * UNIT_SECONDS[unit])
    if seconds > MAX_DURATION_DAYS * 86400:
        raise DurationTooLong(f"duration {text!r} is too long: at most {MAX_DURATION_DAYS}d (about 10 years)")
    return seconds


def _decimal_parts(text: str) -> tuple[float, str]:
    t = text.strip().lower()
    if len(t) < 2 or t[-1] not in UNIT_SECONDS:
        raise DurationError(f"duration {text!r}: use a number and a unit s, m, h, d or w (e.g. '12h')")
    try:
        return float(t[:-1]), t[-1]
    except ValueError:
        raise DurationError(f"duration {text!r}: use a number and a unit s, m, h, d or w (e.g. '12h')") from None


def _whole_parts(text: str) -> tuple[int, str]:
    m = _WHOLE.match(text) if isinstance(text, str) else None
    if m is None:
        raise DurationError(f"duration {text!r}: use a whole number and a unit s, m, h, d or w (e.g. '12h')")
    return int(m.group(1)), m.group(2)
