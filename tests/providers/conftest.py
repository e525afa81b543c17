"""Shared helpers of the connector tests: a sleep that records instead of waiting, and a sandbox
that replays fixed bodies (the documented responses, literally)."""

from __future__ import annotations

from typing import Any

import pytest

from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxVendor


class Recorder:
    """Stands in for time.sleep: remembers the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Canned(SandboxVendor):
    """Serves fixed bodies in order, whatever the request."""

    def __init__(self, vendor: str, *bodies: Any) -> None:
        super().__init__()
        self.vendor = vendor
        self.bodies = list(bodies)

    def route(self, request: SandboxRequest) -> SandboxResponse:
        return SandboxResponse(200, self.bodies.pop(0))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
