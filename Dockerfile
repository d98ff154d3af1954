# syntax=docker/dockerfile:1
#
# capture-relay: one image for every role, chosen by the command:
#   docker run IMAGE serve | worker | simulate | version      (default: serve)
# Build it from the repository root:  docker build -t capture-relay .
# docs/docker.md explains the choices; tests/deploy/test_image.py checks this file without a
# Docker engine (and builds and installs the wheel exactly as below).

# Both stages start from the same image, so the wheels built in the first one (Python ABI,
# glibc) are the ones the second one can run. The tag is pinned, not a digest: no digest could
# be verified where this file was written (no registry access). To pin one:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> -t capture-relay .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the project wheel and a wheelhouse of everything it depends on ----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from; .dockerignore keeps the rest out of the build context.
COPY pyproject.toml README.md ./
COPY capture_relay/ capture_relay/
COPY service/ service/
COPY workers/ workers/
COPY simulator/ simulator/

# 1. The project wheel, with the command CI runs on the same sources; pip's build isolation
#    installs the setuptools that pyproject.toml's [build-system] asks for.
# 2. Wheels of every dependency, resolved from that wheel's own metadata (the wheel is copied
#    along). A dependency without a wheel for this platform would be compiled here, never in
#    the image.
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m pip wheel --wheel-dir /wheelhouse /dist/*.whl

# ---- final: the runtime, no compilers, no build tools, no network at install time -----------
FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="capture-relay" \
      org.opencontainers.image.description="Receives Janrain Capture / Akamai Identity Cloud webhooks, stores them durably in Redis as RQ jobs, and processes them with workers." \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# No .pyc written at run time (the root filesystem is read-only; pip compiled them at install),
# and log lines leave the process as soon as they are written.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The account the processes run as: fixed ids (Kubernetes' runAsUser, compose's user:), no home
# directory and no login shell; it owns no file of the image.
RUN groupadd --system --gid 10001 capture-relay \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin capture-relay

# Install from the builder's wheelhouse only (--no-index): what runs is exactly what was built,
# and no wheel file stays behind in a layer (the wheelhouse is mounted, not copied into one).
# The version needs no pin: the wheelhouse holds the one wheel built from these sources.
# Then, once checked, the installers go: nothing runs pip, setuptools or wheel at run time, and
# image scanners would report their CVEs. pip only warns (exit 0) about a package that is not
# installed (python:3.12+ images ship without setuptools and wheel).
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheelhouse,target=/wheelhouse \
    python -m pip install --no-index --find-links=/wheelhouse --no-cache-dir --compile capture-relay \
 && python -m pip check \
 && capture-relay version \
 && python -m pip uninstall -y pip setuptools wheel

USER 10001:10001
# `serve` listens on server.port (8000); a worker's metrics port is worker.metrics_port.
EXPOSE 8000
# No HEALTHCHECK: the same image runs the ingress, the workers and the simulator, which are
# checked differently; compose.yaml and the Helm chart define a check (probe) per role.
ENTRYPOINT ["capture-relay"]
CMD ["serve"]
