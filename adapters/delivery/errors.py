"""The two exceptions of the delivery adapters, and why there are so few.

A partner failing is not an exceptional event for an adapter worker: it is one of the
outcomes it must act on (retry, dead-letter, stop the connector). So ``deliver()`` never
raises for partner or transport failures; it returns a classified ``DeliveryResult``.

What remains exceptional is a configuration that cannot work at all (a malformed webhook
secret, an endpoint of the wrong kind for its connector): that is refused when the
deliverer is built, with ``DeliveryConfigError``, so that a bad deployment fails at start-up
instead of dead-lettering every statement. ``DeliveryFailed`` is internal plumbing: adapters
raise it deep in a call chain to short-circuit with an already classified result, and catch
it again before ``deliver()`` returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.delivery.port import DeliveryResult


class DeliveryConfigError(ValueError):
    """A partner endpoint configuration that cannot work; raised at construction time."""


class DeliveryFailed(Exception):
    """Carries a classified failure up to ``deliver()``; never escapes an adapter."""

    def __init__(self, result: DeliveryResult) -> None:
        super().__init__(result.detail)
        self.result = result
