"""The Dockerfile, checked without a Docker engine.

A small parser (tests/deploy/dockerfile.py) reads the Dockerfile into stages and instructions,
and the tests assert what the image must be: built in a separate stage, a slim Python runtime
without compilers, installed from the builder's wheelhouse only, a numeric non-root user,
``capture-relay`` as the entrypoint.

The slow test then does what the builder and the final stage do, with real processes: it copies
the files the builder copies (honouring ``.dockerignore``), builds the wheel with the builder's
own ``pip wheel`` command, installs it into a fresh venv with the final stage's ``pip install``
flags, and runs the installed ``capture-relay``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from service.settings import Server
from tests.deploy.dockerfile import (
    Dockerfile,
    Stage,
    dockerignore_excludes,
    option,
    parse_dockerfile,
    pip_commands,
    run_commands,
    without_option,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Compilers and build tool chains that must never reach the runtime image.
BUILD_TOOLS = re.compile(
    r"^(gcc|g\+\+|cpp|cc|c\+\+|clang|llvm|make|cmake|ninja(-build)?|build-essential|gfortran|rustc|cargo|"
    r"autoconf|automake|libtool|pkg-config|.*-dev|.*-devel)(=.*)?$"
)


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


# ---- (a) what the Dockerfile says -------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def test_the_parser_reads_stages_flags_and_continued_lines() -> None:
    parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11-slim\nFROM ${BASE} AS build\n"
        "RUN a \\\n  # a comment inside\n  && b\nFROM $BASE\nCOPY --from=build --chmod=644 /x /y\n"
        'ENV A=1 B="two words"\nENTRYPOINT ["x", "y"]\n'
    )
    assert [(stage.base, stage.name) for stage in parsed.stages] == [
        ("python:3.11-slim", "build"),
        ("python:3.11-slim", None),
    ]
    assert parsed.stages[0].instructions[0].args == "a && b"
    copy = parsed.stages[1].all("COPY")[0]
    assert copy.flag("from") == ["build"]
    assert copy.args == "/x /y"
    assert parsed.stages[1].env() == {"A": "1", "B": "two words"}
    assert parsed.stages[1].all("ENTRYPOINT")[0].exec_form() == ["x", "y"]
    ignore = ["*", "!service/", "**/__pycache__"]
    assert dockerignore_excludes(ignore, ".venv/bin/python")
    assert dockerignore_excludes(ignore, "service/__pycache__/app.cpython-311.pyc")
    assert not dockerignore_excludes(ignore, "service/verify/jwks.py")


def test_the_image_is_built_in_a_separate_stage(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    assert dockerfile.stages[0].name == "builder"
    assert pip_commands(dockerfile.stage("builder"), "wheel"), "the builder builds wheels"


def test_the_runtime_is_the_builders_slim_python(dockerfile: Dockerfile) -> None:
    final, builder = dockerfile.stages[-1], dockerfile.stage("builder")
    match = re.fullmatch(r"python:3\.(\d+)-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?", final.base)
    assert match, f"the final stage should start from a slim Python image, not {final.base}"
    # Wheels with compiled code only fit the interpreter and C library they were built for.
    assert builder.base == final.base
    minimum = re.fullmatch(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum, "requires-python is >=3.N"
    assert int(match.group(1)) >= int(minimum.group(1))


def test_the_final_stage_installs_no_build_tools(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    for _, words in run_commands(final):
        if words[:2] in (["apt-get", "install"], ["apt", "install"], ["apk", "add"]):
            packages = [word for word in words[2:] if not word.startswith("-")]
            assert not [name for name in packages if BUILD_TOOLS.match(name)], words
    assert not pip_commands(final, "wheel"), "wheels are built in the builder, never in the image"
    assert not final.all("ADD"), "ADD can fetch URLs and unpack archives; the image needs neither"


def test_the_final_stage_installs_only_the_builders_wheelhouse(dockerfile: Dockerfile) -> None:
    final, builder = dockerfile.stages[-1], dockerfile.stage("builder")
    installs = pip_commands(final, "install")
    assert len(installs) == 1, installs
    instruction, words = installs[0]
    assert "--no-index" in words, "the image must install nothing from an index"
    assert option(words, "--index-url", "-i", "--extra-index-url") is None
    assert "--no-cache-dir" in words or final.env().get("PIP_NO_CACHE_DIR") == "1"
    assert words[-1] == PYPROJECT["project"]["name"]
    wheelhouse = option(words, "--find-links", "-f")
    assert wheelhouse, "the install names the wheelhouse with --find-links"

    # The wheelhouse comes from the builder: bind-mounted into this RUN, or copied before it.
    mounted = [
        {key: value for key, _, value in (part.partition("=") for part in mount.split(","))}
        for mount in instruction.flag("mount")
    ]
    sources = [m["source"] for m in mounted if m.get("from") == builder.name and m.get("target") == wheelhouse]
    for copy in final.all("COPY"):
        words_of_copy = copy.args.split()
        if copy.flag("from") == [builder.name] and words_of_copy[-1].rstrip("/") == wheelhouse:
            sources += [word.rstrip("/") for word in words_of_copy[:-1]]
    assert sources, f"{wheelhouse} is neither mounted nor copied from the {builder.name} stage"
    # ... from the wheelhouse with the dependencies, not the directory of the project wheel alone.
    wheelhouses = [words for _, words in pip_commands(builder, "wheel") if "--no-deps" not in words]
    built = {option(words, "--wheel-dir", "-w") for words in wheelhouses}
    assert set(sources) <= built, f"the builder's wheelhouse is {built}, the image reads {sources}"


def test_the_runtime_environment_suits_a_read_only_container(dockerfile: Dockerfile) -> None:
    env = dockerfile.stages[-1].env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert not dockerfile.stages[-1].all("VOLUME"), "an anonymous volume would be a writable place"


def test_the_processes_run_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    users = final.all("USER")
    assert users, "the final stage sets USER"
    user = users[-1].args
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: numeric, so Kubernetes' runAsNonRoot can check it"
    uid = user.split(":")[0]
    assert int(uid) != 0
    useradd = [words for _, words in run_commands(final) if words[:1] == ["useradd"]]
    assert len(useradd) == 1, useradd
    assert option(useradd[0], "--uid", "-u") == uid
    assert option(useradd[0], "--shell", "-s") in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert "--no-create-home" in useradd[0] or "-M" in useradd[0]


def test_the_entrypoint_is_the_command_line(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    entrypoint, cmd = final.all("ENTRYPOINT"), final.all("CMD")
    assert [e.exec_form() for e in entrypoint] == [["capture-relay"]]
    assert "capture-relay" in PYPROJECT["project"]["scripts"]
    assert [c.exec_form() for c in cmd] == [["serve"]]
    exposed = {port.split("/")[0] for e in final.all("EXPOSE") for port in e.args.split()}
    assert str(Server().port) in exposed


def test_the_image_carries_oci_labels(dockerfile: Dockerfile) -> None:
    labels = dockerfile.stages[-1].labels()
    for key in ("title", "description", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]


INSTALLERS = ("pip", "setuptools", "wheel")


def test_the_final_stage_removes_the_installers_once_the_install_is_checked(dockerfile: Dockerfile) -> None:
    """pip, setuptools and wheel are uninstalled after `pip check` and `capture-relay version`."""
    commands = [words for _, words in run_commands(dockerfile.stages[-1])]
    uninstalls = [index for index, words in enumerate(commands) if words[:4] == ["python", "-m", "pip", "uninstall"]]
    assert len(uninstalls) == 1, "one pip uninstall in the final stage"
    (where,) = uninstalls
    words = commands[where]
    assert "-y" in words or "--yes" in words, "without -y pip asks, and a build has no one to answer"
    assert sorted(word for word in words[4:] if not word.startswith("-")) == sorted(INSTALLERS)
    checks = [
        index
        for index, command in enumerate(commands)
        if command[:4] == ["python", "-m", "pip", "check"] or command == ["capture-relay", "version"]
    ]
    assert len(checks) == 2, "pip check and capture-relay version both run"
    assert max(checks) < where, "the installers go only after the install was checked"
    after = [command for command in commands[where + 1 :] if "pip" in command or command[:1] == ["pip"]]
    assert after == [], "nothing can run pip once it is uninstalled"


def test_a_healthcheck_if_any_needs_no_curl(dockerfile: Dockerfile) -> None:
    for check in dockerfile.stages[-1].all("HEALTHCHECK"):
        assert not re.search(r"\b(curl|wget)\b", check.args), "the slim image has neither"


def test_the_builder_copies_files_that_reach_the_build_context(dockerfile: Dockerfile) -> None:
    patterns = dockerignore_patterns()
    copies = [copy for copy in dockerfile.stage("builder").all("COPY") if not copy.flag("from")]
    assert copies
    for copy in copies:
        for source in copy.args.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert not dockerignore_excludes(patterns, source.rstrip("/")), f"COPY {source}: left out by .dockerignore"
    # Every package the wheel is made of is copied.
    packages = {path.split("*")[0] for path in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {source.rstrip("/") for copy in copies for source in copy.args.split()[:-1]}
    assert packages <= copied


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "deploy/examples/.env",
        "service/.env.local",
        "workers/.env",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/service/app.data.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "capture_relay.egg-info/PKG-INFO",
        "service/__pycache__/app.cpython-311.pyc",
        "build/lib/service/app.py",
        "dist/capture_relay-0.1.0-py3-none-any.whl",
        "bench/RESULTS.md",
        "tests/conftest.py",
        "helm/capture-relay/values.yaml",
    ],
)
def test_local_state_stays_out_of_the_build_context(path: str) -> None:
    assert dockerignore_excludes(dockerignore_patterns(), path)


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "service/app.py", "simulator/cli.py"])
def test_the_sources_reach_the_build_context(path: str) -> None:
    assert not dockerignore_excludes(dockerignore_patterns(), path)


# ---- (b) the final stage installs the wheel the builder (and CI) builds -----------------------


def _stage_builder_context(builder: Stage, destination: Path) -> Path:
    """Lay out what the builder's COPY instructions put into the image; returns its WORKDIR."""
    patterns = dockerignore_patterns()
    workdirs = builder.all("WORKDIR")
    assert len(workdirs) == 1, "one WORKDIR in the builder"
    assert workdirs[0].args.startswith("/")
    workdir = destination / workdirs[0].args.lstrip("/")
    workdir.mkdir(parents=True)
    for copy in builder.all("COPY"):
        *sources, target = copy.args.split()
        for source in sources:
            path = ROOT / source
            into = workdir / target
            if path.is_dir():
                for file in sorted(path.rglob("*")):
                    relative = file.relative_to(ROOT).as_posix()
                    if file.is_file() and not dockerignore_excludes(patterns, relative):
                        copied = into / file.relative_to(path)
                        copied.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(file, copied)
            else:
                copied = into / path.name if target.endswith("/") else into
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copied)
    return workdir


def _shadow_site_packages(destination: Path) -> Path:
    """This environment's installed distributions, less capture-relay itself, as symlinks.

    The fresh venv sees the dependencies through a ``.pth`` line pointing here, so nothing is
    downloaded; capture-relay (an editable install here) is left out, so the only copy the venv
    can import is the wheel under test.
    """
    packages = {name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    distribution = re.sub(r"[-_.]+", "_", PYPROJECT["project"]["name"]).lower()
    destination.mkdir()
    paths = sysconfig.get_paths()
    for site_packages in dict.fromkeys([paths["purelib"], paths["platlib"]]):
        for entry in Path(site_packages).iterdir():
            name = entry.name
            metadata_of = re.match(r"(.+?)(?:-[^-]+)?\.(?:dist|egg)-info$", name)
            if (
                name in packages
                or (metadata_of and re.sub(r"[-_.]+", "_", metadata_of.group(1)).lower() == distribution)
                or name.endswith(".pth")
                or name.startswith("__editable__")
            ):
                continue
            if not (destination / name).exists():
                (destination / name).symlink_to(entry)
    return destination


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, f"{shlex.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_final_stage_installs_the_wheel_ci_builds(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """Build the wheel as the builder does, install it as the final stage does, and run it."""
    builder, final = dockerfile.stage("builder"), dockerfile.stages[-1]
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    version = PYPROJECT["project"]["version"]

    # 1. The builder's project wheel: its own command, on the files its COPY lines copy.
    wheel_commands = [words for _, words in pip_commands(builder, "wheel") if "--no-deps" in words]
    assert len(wheel_commands) == 1, wheel_commands
    words = wheel_commands[0]
    assert words[-1] == ".", "the builder builds the project in its WORKDIR"
    flags = without_option(words[4:-1], "--wheel-dir", "-w")
    source = _stage_builder_context(builder, tmp_path / "context")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", *flags, "--wheel-dir", str(dist), "."], source, env)
    wheels = list(dist.glob("*.whl"))
    assert [wheel.name for wheel in wheels] == [f"capture_relay-{version}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
    assert {"capture_relay", "service", "workers", "simulator"} <= top_level
    assert "tests" not in top_level

    # 2. A fresh venv, and the final stage's own pip install with the wheelhouse swapped for ours.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    shadow = _shadow_site_packages(tmp_path / "dependencies")
    (Path(purelib.strip()) / "_dependencies.pth").write_text(f"{shadow}\n", encoding="utf-8")
    _, install = pip_commands(final, "install")[0]
    install_args = [f"--find-links={dist}", *without_option(install[4:], "--find-links", "-f")]
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", *install_args], tmp_path, env)

    # 3. What the container runs.
    command = venv / "bin" / "capture-relay"
    assert _run([str(command), "version"], tmp_path, env).strip() == version
    usage = _run([str(command), "--help"], tmp_path, env)
    for subcommand in ("serve", "worker", "simulate", "version"):
        assert re.search(rf"^\s+{subcommand}\s", usage, re.MULTILINE), f"--help does not list {subcommand}"
    imported = _run(
        [
            str(python),
            "-c",
            "import json, capture_relay.cli, service.app, workers.runner, simulator.app as s;"
            "print(json.dumps([m.__file__ for m in (capture_relay.cli, service.app, workers.runner, s)]))",
        ],
        tmp_path,
        env,
    )
    for module_file in json.loads(imported):
        assert Path(module_file).is_relative_to(Path(purelib.strip())), f"{module_file} is not the installed wheel"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_final_stages_uninstall_leaves_no_installer(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """The final stage's own uninstall command, run in a venv made by ensurepip (offline): it exits 0
    although one of the packages is missing there, and pip and setuptools are gone afterwards."""
    (words,) = [words for _, words in pip_commands(dockerfile.stages[-1], "uninstall")]
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    listed = {item["name"] for item in json.loads(_run([python, "-m", "pip", "list", "--format=json"], tmp_path, env))}
    assert "pip" in listed
    assert set(INSTALLERS) - listed, "this check wants one package to be missing, as in python:3.12+ images"

    _run([python, *words[1:]], tmp_path, env)

    for module in ("pip", "setuptools", "wheel"):
        result = subprocess.run([python, "-c", f"import {module}"], env=env, capture_output=True, check=False)
        assert result.returncode != 0, f"{module} is still importable"
