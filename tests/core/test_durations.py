"""One duration parser: decimals for config thresholds, whole numbers for key lifetimes."""
from __future__ import annotations

from datetime import timedelta

import pytest

from bastion.accounts import parse_lifetime
from bastion.core.durations import MAX_DURATION_DAYS, DurationError, DurationTooLong, parse_duration
from bastion.core.errors import AccessError


def test_decimal_and_whole_durations():
    assert parse_duration("1.5h") == 5400.0 and parse_duration(" 2W ") == 14 * 86400
    assert parse_duration("30 d", whole=True) == 30 * 86400
    assert parse_duration(f"{MAX_DURATION_DAYS}d", whole=True) == MAX_DURATION_DAYS * 86400
    for bad in ("1.5h", "2W", "0d", "-1d", "d", "", "9" * 19 + "s"):
        with pytest.raises(DurationError):
            parse_duration(bad, whole=True)
    for bad in ("0h", "-1h", "h", "nanh", "infd", "12"):
        with pytest.raises(DurationError):
            parse_duration(bad)
    with pytest.raises(DurationTooLong):
        parse_duration(f"{MAX_DURATION_DAYS + 1}d")


def test_key_lifetimes_keep_their_error_and_messages():
    assert parse_lifetime("2w") == timedelta(days=14)
    with pytest.raises(AccessError, match=r"invalid duration '1\.5h': use a positive number"):
        parse_lifetime("1.5h")
    with pytest.raises(AccessError, match="duration '3651d' is too long: at most 3650d"):
        parse_lifetime("3651d")
