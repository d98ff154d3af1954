"""interpolate(): ${VAR}, ${VAR:-default}, ${file:/path} and $${ over a parsed YAML tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.interpolate import InterpolationError, interpolate


class TestInterpolate:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("${HOST}", "redis", id="whole-value"),
            pytest.param("redis://${HOST}:${PORT}/0", "redis://redis:6379/0", id="inside-a-string"),
            pytest.param("${ HOST }", "redis", id="spaces-inside-braces"),
            pytest.param("${UNSET:-fallback}", "fallback", id="default"),
            pytest.param("${UNSET:-}", "", id="empty-default"),
            pytest.param("${EMPTY:-fallback}", "fallback", id="empty-value-takes-default"),
            pytest.param("${EMPTY}", "", id="empty-value-without-default"),
            pytest.param("${HOST:-fallback}", "redis", id="set-value-wins"),
            pytest.param("${UNSET:-a:b/c}", "a:b/c", id="default-with-colons"),
            pytest.param("$${HOST}", "${HOST}", id="escaped"),
            pytest.param("no references $HOST {HOST}", "no references $HOST {HOST}", id="plain"),
        ],
    )
    def test_references_are_resolved(self, text: str, expected: str) -> None:
        """Each reference form resolves as documented."""
        environ = {"HOST": "redis", "PORT": "6379", "EMPTY": ""}

        resolved = interpolate({"value": text}, environ)

        assert resolved == {"value": expected}

    def test_resolved_values_are_not_interpolated_again(self) -> None:
        """A value from the environment that looks like a reference is taken literally."""
        environ = {"OUTER": "${INNER}", "INNER": "leaked"}

        resolved = interpolate({"value": "${OUTER}"}, environ)

        assert resolved == {"value": "${INNER}"}

    def test_only_strings_are_touched(self) -> None:
        """Numbers, booleans, null and keys are left as parsed; lists and mappings are walked."""
        tree = {"port": 8000, "on": True, "off": None, "${KEY}": ["${A}", {"b": "${A}"}]}

        resolved = interpolate(tree, {"A": "x", "KEY": "k"})

        assert resolved == {"port": 8000, "on": True, "off": None, "${KEY}": ["x", {"b": "x"}]}

    def test_input_tree_is_not_modified(self) -> None:
        """interpolate returns a copy."""
        tree = {"a": ["${A}"]}

        interpolate(tree, {"A": "x"})

        assert tree == {"a": ["${A}"]}

    @pytest.mark.parametrize(
        ("tree", "key_path"),
        [
            pytest.param({"a": {"b": "${MISSING}"}}, "a.b", id="mapping"),
            pytest.param({"a": [{"b": "ok"}, {"b": "x${MISSING}"}]}, "a[1].b", id="list"),
            pytest.param("${MISSING}", "<root>", id="root"),
        ],
    )
    def test_missing_variable_names_the_key_path(self, tree: object, key_path: str) -> None:
        """An unset variable without default names where it stands and how to fix it."""
        environ: dict[str, str] = {}

        with pytest.raises(InterpolationError) as caught:
            interpolate(tree, environ)

        assert caught.value.key_path == key_path
        assert caught.value.problem == "environment variable MISSING is not set; set it or write ${MISSING:-default}"

    def test_file_reference_reads_the_file_without_trailing_newline(self, tmp_path: Path) -> None:
        """${file:/path} is replaced by the file's content, minus the newline editors add."""
        secret = tmp_path / "redis-password"
        secret.write_text("p@ss word\r\n", encoding="utf-8")

        resolved = interpolate({"redis_url": f"redis://:${{file:{secret}}}@redis:6379/0"}, {})

        assert resolved == {"redis_url": "redis://:p@ss word@redis:6379/0"}

    def test_unreadable_file_names_the_key_path(self, tmp_path: Path) -> None:
        """A secret file that cannot be read is an InterpolationError at its key."""
        missing = tmp_path / "absent"

        with pytest.raises(InterpolationError) as caught:
            interpolate({"sources": {"legacy": {"callback_hashes": [f"${{file:{missing}}}"]}}}, {})

        assert caught.value.key_path == "sources.legacy.callback_hashes[0]"
        assert caught.value.problem.startswith(f"cannot read secret file {missing}")

    def test_error_message_holds_path_and_problem(self) -> None:
        """str(InterpolationError) is 'key.path: problem', like a ConfigError line."""
        tree = {"a": "${MISSING}"}

        with pytest.raises(InterpolationError) as caught:
            interpolate(tree, {})

        assert str(caught.value) == "a: environment variable MISSING is not set; set it or write ${MISSING:-default}"
