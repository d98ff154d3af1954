"""``${VAR}`` / ``${VAR:-default}`` / ``${file:/path}`` interpolation over a parsed YAML tree.

Interpolation runs on the string values after YAML parsing, never on the raw text: a value
taken from the environment can then never change the shape of the document. ``$${`` writes a
literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# An escaped "$${", a reference, or any other "${" (refused as malformed).
_REFERENCE = re.compile(r"\$\$\{|\$\{(?:\s*(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)\s*(?::-([^}]*))?\})?")


class InterpolationError(ValueError):
    """A ``${...}`` reference that cannot be resolved; ``key_path`` names where it stands."""

    def __init__(self, key_path: str, problem: str) -> None:
        super().__init__(f"{key_path}: {problem}")
        self.key_path = key_path
        self.problem = problem


def interpolate(tree: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Return a copy of ``tree`` with every reference in its strings resolved."""
    if isinstance(tree, dict):
        return {key: interpolate(value, environ, _join(path, str(key))) for key, value in tree.items()}
    if isinstance(tree, list):
        return [interpolate(value, environ, f"{path}[{index}]") for index, value in enumerate(tree)]
    if isinstance(tree, str):
        return _resolve(tree, environ, path or "<root>")
    return tree


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _resolve(text: str, environ: Mapping[str, str], key_path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        if match.group(1) is None:
            # "${" that does not start a reference, e.g. the typo ${VAR:default}: kept as text it
            # would silently become a hash, a password or a URL.
            raise InterpolationError(
                key_path,
                "malformed ${...} reference; write ${VAR}, ${VAR:-default}, ${file:/path}, or $${ for a literal",
            )
        name, default = match.group(1).strip(), match.group(2)
        if name.startswith("file:"):
            return _read_secret_file(name.removeprefix("file:"), key_path)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            raise InterpolationError(
                key_path,
                f"environment variable {name} is not set; set it or write ${{{name}:-default}}",
            )
        return value

    return _REFERENCE.sub(replace, text)


def _read_secret_file(path: str, key_path: str) -> str:
    try:
        # A trailing newline is an artefact of how secret files are written, not part of the secret.
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise InterpolationError(key_path, f"cannot read secret file {path}: {exc.strerror}") from exc
