"""``python -m capture_relay`` is ``capture-relay``."""

from capture_relay.cli import main

raise SystemExit(main())
