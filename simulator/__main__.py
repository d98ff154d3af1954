"""``python -m simulator`` is ``capture-relay simulate``."""

import argparse

from simulator.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m simulator", description="Run the Capture / Identity Cloud simulator.")
add_arguments(parser)
raise SystemExit(run(parser.parse_args()))
