"""A localstripe server for tests (billing/payments/localstripe.py runs it).

``localstripe_server`` (session) starts it on a free port, waits until it answers on 127.0.0.1 and
stops it at the end; ``localstripe`` (per test) empties its data first and, after the test, points
the webhooks the test registered at a closed port, so late deliveries cannot reach the next test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from billing.payments.localstripe import SECRET_KEY, LocalStripe, free_port, start, stop

__all__ = ["SECRET_KEY", "LocalStripe", "localstripe", "localstripe_server"]


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[LocalStripe]:
    """One localstripe process for the test session, on a free port of 127.0.0.1."""
    server = start(port=free_port())
    try:
        yield server
    finally:
        stop(server.process)
        server.log.unlink(missing_ok=True)


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> Iterator[LocalStripe]:
    """The session's localstripe, emptied for this test."""
    localstripe_server.flush()
    yield localstripe_server
    localstripe_server.silence_webhooks()
