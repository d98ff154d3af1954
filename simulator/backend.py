"""The Capture application behind the API routes, and the one way those routes answer.

Every Capture route reads its parameters, checks the caller's credentials, runs its handler and
answers ``{..., "stat": "ok"}`` or the error envelope, noting the outcome in the call log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.config import SimulatorConfig
from simulator.credentials import authenticate
from simulator.envelope import CaptureError, error_response, ok_response
from simulator.params import Params, read_params
from simulator.profiles import ProfileStore
from simulator.stats import current_call
from simulator.webhook_registry import LegacyWebhooks


@dataclass(slots=True)
class CaptureBackend:
    """One Capture application: its configuration, profiles and legacy webhooks, and its clock."""

    config: SimulatorConfig
    store: ProfileStore
    webhooks: LegacyWebhooks
    clock: Callable[[], float]

    def entity_type(self, params: Params) -> str:
        """The ``type_name`` of a call.

        Raises:
            CaptureError: 100 when it is missing, 222 when the application has no such type.
        """
        type_name = params.require("type_name")
        if type_name not in self.store.entity_types:
            raise CaptureError(222, f"unknown entity type: {type_name}", type_name=type_name)
        return type_name


Handler = Callable[[CaptureBackend, Params], dict[str, Any]]


def capture_route(path: str, handler: Handler, backend: CaptureBackend) -> Route:
    """A Capture API route (``POST``, or ``GET`` with query parameters) answered by ``handler``.

    ``handler`` returns the success payload (without ``stat``) or raises ``CaptureError``.
    """

    async def endpoint(request: Request) -> Response:
        params = await read_params(request)
        call = current_call(request.scope)
        try:
            authenticate(
                path=request.url.path,
                headers=request.headers,
                params=params,
                client=backend.config.api_client,
                now=backend.clock(),
                skew=backend.config.signature_skew,
            )
            payload = handler(backend, params)
        except CaptureError as error:
            if call is not None:
                call.answered(error.code)
            return error_response(error, backend.config.error_http_status)
        if call is not None:
            call.answered(None)
        return ok_response(payload)

    return Route(path, endpoint, methods=["GET", "POST"])
