"""The checklist's sentences agree with where the statements actually go (issue 14): an
unbound IBAN whose mandate is not approved is held, so no check may say its statements
go to the global file."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given

from routing.domain.decide import Destination, decide, run_checks
from routing.domain.model import IbanState
from tests.unit.domain.strategies import iban_states

CATALOGUE = frozenset({"acd", "quadra"})
TO_GLOBAL_FILE = ("vont dans le fichier global", "statements go to the global file",
                  "statements go to the cabinet's global file")
HELD = ("mis en attente", "are held")


@dataclass(frozen=True)
class Stmt:
    iban: str


def sentences(st: IbanState) -> str:
    return " ".join(f"{c.message_fr} {c.message_en}" for c in run_checks(st, CATALOGUE))


@given(iban_states)
def test_the_checks_never_say_both_global_file_and_held(st: IbanState) -> None:
    text = sentences(st)
    destination = decide(Stmt(st.iban), st, CATALOGUE).destination

    says_global_file = any(words in text for words in TO_GLOBAL_FILE)
    assert not (says_global_file and any(words in text for words in HELD)), text
    if says_global_file:
        assert destination is Destination.GLOBAL_FILE, text
    if destination is Destination.HELD:
        assert not says_global_file, text
