"""Dockerfiles and .dockerignore read without a Docker engine, for the image tests.

``parse_dockerfile`` splits a Dockerfile into stages and instructions (continued lines joined,
comments dropped, leading ``--flag=value`` options apart, global ``ARG`` defaults resolved in
``FROM``); it refuses what it does not understand (a custom escape character, RUN heredocs, an
unknown instruction). ``run_commands`` and ``pip_commands`` split a stage's RUN instructions into
commands, and ``option``/``without_option`` read their ``--name VALUE`` options.
``dockerignore_excludes`` decides, as Docker does, whether a path is left out of the build context.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

# Every instruction of the Dockerfile reference; anything else is refused.
KEYWORDS = frozenset(
    {
        *("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL"),
        *("MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"),
    }
)


# ---- the Dockerfile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, its leading ``--flag=value`` options and the rest."""

    keyword: str
    flags: tuple[tuple[str, str], ...]
    args: str
    line: int

    def flag(self, name: str) -> list[str]:
        """Every value given to ``--name`` (``--mount`` may repeat)."""
        return [value for key, value in self.flags if key == name]

    def exec_form(self) -> list[str] | None:
        """The JSON array of ``CMD ["a", "b"]``-style instructions, or None for the shell form."""
        if not self.args.startswith("["):
            return None
        value = json.loads(self.args)
        assert isinstance(value, list), self
        assert all(isinstance(item, str) for item in value), self
        return value


@dataclass
class Stage:
    """One ``FROM`` and the instructions after it."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The instructions with ``keyword``, in order."""
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The ``ENV`` variables this stage sets (``ENV A=1 B=2`` and the old ``ENV A 1``)."""
        result: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.args)
            if words and "=" not in words[0]:
                result[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                result[key] = value
        return result

    def labels(self) -> dict[str, str]:
        """The ``LABEL`` keys and values this stage sets."""
        result: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                result[key] = value
        return result


@dataclass
class Dockerfile:
    """The global ``ARG`` defaults (before the first ``FROM``) and the stages, in order."""

    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """The stage named ``name`` (``FROM ... AS name``)."""
        return next(stage for stage in self.stages if stage.name == name)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join ``\\``-continued lines and drop comment lines (also inside a continuation)."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        yield start, " ".join(part for part in pending if part)
        pending = []
    assert not pending, f"Dockerfile ends inside a continued line (from line {start})"


def _split_flags(args: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """The leading ``--flag[=value]`` options of an instruction, and the rest."""
    flags: list[tuple[str, str]] = []
    rest = args
    while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest):
        flags.append((match.group(1), match.group(2) or ""))
        rest = rest[match.end() :]
    return tuple(flags), rest


def substitute(text: str, variables: dict[str, str]) -> str:
    """Expand ``$NAME``, ``${NAME}`` and ``${NAME:-default}`` as Docker does for FROM and ARG."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        value = variables.get(name, "")
        return value if value or match.group(2) is None else match.group(2)

    return re.sub(r"\$\{([A-Za-z_]\w*)(?::-([^}]*))?\}|\$([A-Za-z_]\w*)", replace, text)


def parse_dockerfile(text: str) -> Dockerfile:
    """Stages and instructions of a Dockerfile, with the global ``ARG`` defaults resolved in ``FROM``."""
    assert not re.search(r"^#\s*escape\s*=", text, re.MULTILINE), "a custom escape character is not supported"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, logical in _logical_lines(text):
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        assert keyword in KEYWORDS, f"line {line}: unknown instruction {keyword}"
        assert "<<" not in args or keyword != "RUN", f"line {line}: heredocs are not supported by this parser"
        flags, rest = _split_flags(args.strip())
        instruction = Instruction(keyword, flags, rest.strip(), line)
        if keyword == "FROM":
            words = substitute(instruction.args, global_args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"line {line}: only ARG may come before the first FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def run_commands(stage: Stage) -> list[tuple[Instruction, list[str]]]:
    """Each ``&&``-separated command of the stage's RUN instructions, split into words."""
    result = []
    for instruction in stage.all("RUN"):
        assert instruction.exec_form() is None, "RUN in exec form is not expected"
        for command in re.split(r"&&|;", instruction.args):
            if command.strip():
                result.append((instruction, shlex.split(command)))
    return result


def pip_commands(stage: Stage, subcommand: str) -> list[tuple[Instruction, list[str]]]:
    """The stage's ``python -m pip <subcommand>`` commands, with their instruction."""
    return [
        (instruction, words)
        for instruction, words in run_commands(stage)
        if words[:4] == ["python", "-m", "pip", subcommand]
    ]


def without_option(words: list[str], *names: str) -> list[str]:
    """``words`` less every ``--name VALUE`` and ``--name=VALUE``."""
    result: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in names:
            skip = True
        elif not any(word.startswith(name + "=") for name in names):
            result.append(word)
    return result


def option(words: list[str], *names: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` among ``words``."""
    for index, word in enumerate(words):
        for name in names:
            if word == name:
                return words[index + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


# ---- .dockerignore ----------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (``**``, ``*``, ``?``, ``[...]``) as a regular expression over paths."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out += pattern[index : end + 1]
            index = end + 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, with ``/``) out of the build context.

    As Docker does: the last pattern that matches the path or one of its parent directories
    decides, and a ``!`` pattern includes again.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded
