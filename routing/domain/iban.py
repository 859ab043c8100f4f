"""IBAN normalisation, validation and masking.

Validation is ISO 13616 (mod 97) plus the national check, which for French IBANs is the
RIB key, both through schwifty (``validate_bban=True``). Results are cached: an IBAN's
validity never changes, and the router validates the same IBANs every business day.
"""

from __future__ import annotations

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from routing.domain.errors import InvalidIban

_RIB_LETTERS = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "12345678912345678923456789",
)


def rib_key(bank: str, guichet: str, account: str) -> str:
    """The two-digit French RIB key: 97 − ((89·bank + 15·guichet + 3·account′) mod 97).

    Letters in the account number are mapped to digits the French way (A/J→1, B/K/S→2, …).
    """
    if not (bank.isdigit() and guichet.isdigit() and len(bank) == 5 and len(guichet) == 5):
        raise InvalidIban(f"bank code {bank!r} and guichet {guichet!r} must be 5 digits each")
    digits = account.upper().translate(_RIB_LETTERS)
    if len(account) != 11 or not digits.isdigit():
        raise InvalidIban(f"account number {account!r} must be 11 letters or digits")
    key = 97 - ((89 * int(bank) + 15 * int(guichet) + 3 * int(digits)) % 97)
    return f"{key:02d}"


def iban_from_rib(bank: str, guichet: str, account: str) -> str:
    """Build the French IBAN of a RIB, computing the RIB key and the mod 97-10 check digits."""
    bban = f"{bank}{guichet}{account.upper()}{rib_key(bank, guichet, account)}"
    numeric = "".join(str(int(ch, 36)) for ch in bban + "FR00")
    check = 98 - int(numeric) % 97
    return normalise_iban(f"FR{check:02d}{bban}")


_NORMALISED: dict[str, str] = {}
_NORMALISED_LIMIT = 262_144
"""The valid IBANs seen, as written, with their normal form; emptied when full. A plain
dict, not ``lru_cache``: the router looks up every statement's IBAN, and the cache's
bookkeeping on each hit cost twice the lookup. Refusals are not kept."""


def normalise_iban(raw: str) -> str:
    """Upper-case, strip spaces, and validate; raise ``InvalidIban`` with the reason."""
    known = _NORMALISED.get(raw)
    if known is not None:
        return known
    normal = _validated(raw)
    if len(_NORMALISED) >= _NORMALISED_LIMIT:
        _NORMALISED.clear()
    _NORMALISED[raw] = normal
    return normal


def _validated(raw: str) -> str:
    compact = "".join(raw.split()).upper()
    if not compact:
        raise InvalidIban("IBAN is empty")
    try:
        iban = IBAN(compact, validate_bban=True)
    except SchwiftyException as exc:
        # schwifty's message repeats the input in clear: drop it, the mask is enough.
        reason = str(exc).replace(compact, "").replace(raw, "").strip().rstrip(":").strip()
        raise InvalidIban(f"IBAN {mask_iban(compact)} is invalid: {reason}") from None
    return str(iban.compact)


def key_difference(key: str, iban: str) -> str:
    """What makes ``key`` differ from the normalised ``iban``, in words that reveal neither.

    Both masked would read the same ("FR76 **** … 189" twice) and hide the mistake, so
    this says what to fix: spaces, lower case, length, or which positions differ.
    """
    problems = []
    if any(ch.isspace() for ch in key):
        problems.append("the key has spaces")
    if key != key.upper():
        problems.append("the key has lower case")
    compact = "".join(key.split()).upper()
    if compact == iban:
        return " and ".join(problems) + ": it is this IBAN, not normalised"
    if len(compact) != len(iban):
        problems.append(f"the key has {len(compact)} characters, the IBAN {len(iban)}")
    else:
        pairs = enumerate(zip(compact, iban, strict=True), start=1)
        positions = [str(i) for i, (a, b) in pairs if a != b]
        problems.append(f"they differ at character {', '.join(positions)} of {len(iban)}")
    return "; ".join(problems)


def mask_iban(iban: str) -> str:
    """Mask an IBAN for logs: country, check digits and the last 4 characters stay visible.

    ``FR7630006000011234567890189`` becomes ``FR76 **** **** **** **** ***0 189``.
    """
    compact = "".join(str(iban).split()).upper()
    if len(compact) <= 8:
        return "*" * len(compact)
    masked = compact[:4] + "*" * (len(compact) - 8) + compact[-4:]
    return " ".join(masked[i : i + 4] for i in range(0, len(masked), 4))
