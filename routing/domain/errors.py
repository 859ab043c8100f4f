"""The domain's errors: one root, one class per refusal a person may need to understand.

``code`` is the stable machine-readable name (it becomes the API's ``error`` field); the
message is the sentence shown to a person.
"""

from __future__ import annotations


class DomainError(Exception):
    """Root of every refusal raised by the FAQ rules."""

    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthenticationFailed(DomainError):
    code = "unauthenticated"


class PermissionDenied(DomainError):
    code = "forbidden"


class ProfileNotAllowed(PermissionDenied):
    code = "profile_not_allowed"


class OtherCabinet(PermissionDenied):
    code = "other_cabinet"

    def __init__(self, cabinet_id: str) -> None:
        super().__init__(f"you can only act inside your own cabinet, not in cabinet {cabinet_id}")


class NotFound(DomainError):
    code = "not_found"


class UnknownCabinet(NotFound):
    code = "unknown_cabinet"

    def __init__(self, cabinet_id: str) -> None:
        super().__init__(f"cabinet {cabinet_id} does not exist")


class UnknownConnector(NotFound):
    code = "unknown_connector"

    def __init__(self, connector_id: str) -> None:
        super().__init__(f"connector {connector_id} is not in the connector catalogue")


class UnknownIban(NotFound):
    code = "unknown_iban"

    def __init__(self, iban: str) -> None:
        super().__init__(f"IBAN {iban} is not registered")


class Conflict(DomainError):
    code = "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class ConnectorStillBound(Conflict):
    code = "connector_still_bound"

    def __init__(self, connector_id: str, cabinet_id: str, bound_ibans: int) -> None:
        plural = "IBAN" if bound_ibans == 1 else "IBANs"
        super().__init__(
            f"connector {connector_id} is still bound to {bound_ibans} {plural} of cabinet "
            f"{cabinet_id}; unbind them first (« Aucun connecteur »)"
        )
        self.bound_ibans = bound_ibans


class ConnectorNotOnCabinet(Conflict):
    code = "connector_not_on_cabinet"

    def __init__(self, connector_id: str, cabinet_id: str) -> None:
        super().__init__(
            f"connector {connector_id} has not been added to cabinet {cabinet_id}; "
            "a superviseur or an administrateur must add it first"
        )


class InvalidIban(DomainError):
    code = "invalid_iban"


class InvalidIdentifier(DomainError):
    """A cabinet, connector or user id outside the allowed alphabet (``routing.domain.ids``)."""

    code = "invalid_id"
