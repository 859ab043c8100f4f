"""The pure domain: FAQ rules, IBAN validation, decide() and diagnose().

Nothing here imports faust, aiokafka, SQLAlchemy or pydantic: the same code runs in the
store, the router and the tests, so the rules cannot drift between them.
"""

from routing.domain.decide import (
    Check,
    CheckName,
    Decision,
    Destination,
    Diagnosis,
    Verdict,
    decide,
    diagnose,
    run_checks,
)
from routing.domain.errors import (
    AlreadyExists,
    AuthenticationFailed,
    Conflict,
    ConnectorNotOnCabinet,
    ConnectorStillBound,
    DomainError,
    InvalidIban,
    InvalidIdentifier,
    NotFound,
    OtherCabinet,
    PermissionDenied,
    ProfileNotAllowed,
    UnknownCabinet,
    UnknownConnector,
    UnknownIban,
)
from routing.domain.iban import iban_from_rib, mask_iban, normalise_iban, rib_key
from routing.domain.model import (
    Actor,
    IbanState,
    MandateStatus,
    Profile,
)

__all__ = [
    "Actor",
    "AlreadyExists",
    "AuthenticationFailed",
    "Check",
    "CheckName",
    "Conflict",
    "ConnectorNotOnCabinet",
    "ConnectorStillBound",
    "Decision",
    "Destination",
    "Diagnosis",
    "DomainError",
    "IbanState",
    "InvalidIban",
    "InvalidIdentifier",
    "MandateStatus",
    "NotFound",
    "OtherCabinet",
    "PermissionDenied",
    "Profile",
    "ProfileNotAllowed",
    "UnknownCabinet",
    "UnknownConnector",
    "UnknownIban",
    "Verdict",
    "decide",
    "diagnose",
    "iban_from_rib",
    "mask_iban",
    "normalise_iban",
    "rib_key",
    "run_checks",
]
