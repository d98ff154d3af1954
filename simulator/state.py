"""``Simulator``: everything one simulated Capture application and Akamai customer holds.

One object, built once by ``Simulator.create`` and handed to ``create_app``, so that tests and
the CLI can reach the profiles, the faults and the stats of the app they started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from simulator.akamai import AkamaiState
from simulator.backend import CaptureBackend
from simulator.config import SimulatorConfig
from simulator.emitter import Emitter
from simulator.faults import Faults
from simulator.profiles import ProfileStore
from simulator.stats import CallStats
from simulator.webhook_registry import LegacyWebhooks


@dataclass(slots=True)
class Simulator:
    """The simulator's state; ``capture`` is what the Capture API routes answer from."""

    config: SimulatorConfig
    store: ProfileStore
    faults: Faults
    stats: CallStats
    akamai: AkamaiState
    emitter: Emitter
    capture: CaptureBackend

    @classmethod
    def create(cls, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> Simulator:
        """A simulator with no profiles, no webhooks, no faults (but ``config.max_concurrent_calls``)."""
        store = ProfileStore(config.entity_types, clock)
        akamai = AkamaiState(config, clock)
        return cls(
            config=config,
            store=store,
            faults=Faults(startup_limit=config.max_concurrent_calls),
            stats=CallStats(),
            akamai=akamai,
            emitter=Emitter(config, store, akamai.keys, clock=clock),
            capture=CaptureBackend(config, store, LegacyWebhooks(config.entity_types, clock), clock),
        )
