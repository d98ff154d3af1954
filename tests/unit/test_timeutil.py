"""parse_duration and parse_size: the units operators write in the config."""

from __future__ import annotations

import math

import pytest

from service.timeutil import parse_duration, parse_size


class TestParseDuration:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            (30, 30.0),
            (2.5, 2.5),
            (0, 0.0),
            ("30", 30.0),
            ("30s", 30.0),
            ("250ms", 0.25),
            ("5m", 300.0),
            ("48h", 172800.0),
            ("14d", 1209600.0),
            ("1.5h", 5400.0),
            (" 10 s ", 10.0),
        ],
        ids=repr,
    )
    def test_accepted_forms(self, value: str | float, seconds: float) -> None:
        """Numbers are seconds; strings may carry ms, s, m, h or d."""
        given = value

        result = parse_duration(given)

        assert result == seconds

    @pytest.mark.parametrize("value", ["2 days", "h", "-5s", "5 hours", "1e3", "", "5H"], ids=repr)
    def test_unreadable_strings_say_what_is_accepted(self, value: str) -> None:
        """A string that is not N[unit] is refused with the accepted forms."""
        given = value

        with pytest.raises(ValueError, match="is not a duration; use a number of seconds or N followed by"):
            parse_duration(given)

    def test_negative_number_is_refused(self) -> None:
        """A negative duration is refused."""
        given = -1

        with pytest.raises(ValueError, match="is negative"):
            parse_duration(given)

    @pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
    def test_booleans_are_refused(self, value: bool) -> None:
        """YAML's yes/no are not durations, although bool is an int in Python."""
        given = value

        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(given)

    def test_not_a_number_is_refused(self) -> None:
        """YAML's .nan is not a duration: a NaN max_age would silently disable the age check."""
        given = math.nan

        with pytest.raises(ValueError, match="duration"):
            parse_duration(given)


class TestParseSize:
    @pytest.mark.parametrize(
        ("value", "size"),
        [
            (65536, 65536),
            ("65536", 65536),
            ("64KiB", 65536),
            ("1MiB", 1048576),
            ("64KB", 64000),
            ("2MB", 2000000),
            ("10B", 10),
            (" 4 KiB ", 4096),
        ],
        ids=repr,
    )
    def test_accepted_forms(self, value: str | int, size: int) -> None:
        """Integers are bytes; strings may carry B, KiB, MiB, KB or MB."""
        given = value

        result = parse_size(given)

        assert result == size

    @pytest.mark.parametrize("value", ["64 kb", "1.5MiB", "GiB", "", "-1"], ids=repr)
    def test_unreadable_strings_say_what_is_accepted(self, value: str) -> None:
        """A string that is not N[unit] is refused with the accepted units."""
        given = value

        with pytest.raises(ValueError, match="is not a size; use bytes or N followed by B, KiB, MiB, KB or MB"):
            parse_size(given)

    @pytest.mark.parametrize("value", [0, "0", "0KiB", -5], ids=repr)
    def test_zero_or_less_is_refused(self, value: str | int) -> None:
        """A size must be greater than zero."""
        given = value

        with pytest.raises(ValueError, match="must be greater than zero"):
            parse_size(given)

    def test_boolean_is_refused(self) -> None:
        """true is not a size."""
        given = True

        with pytest.raises(ValueError, match="is not a size"):
            parse_size(given)
