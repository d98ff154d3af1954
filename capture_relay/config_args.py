"""The ``--config`` option every command that reads the configuration shares."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from service.settings import ConfigError, Settings, load


def config_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` to ``parser``."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: $CAPTURE_RELAY_CONFIG)")


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Load the file named by ``--config`` or ``CAPTURE_RELAY_CONFIG``.

    Raises:
        ConfigError: when neither names a file, or the file is invalid.
    """
    path = args.config or environ.get("CAPTURE_RELAY_CONFIG")
    if not path:
        raise ConfigError([("--config", "no configuration file; pass --config FILE or set CAPTURE_RELAY_CONFIG")])
    return load(path, environ)
