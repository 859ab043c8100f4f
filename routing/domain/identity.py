"""What makes two statements the same one: the identity rule every sink follows.

**A statement is its account and its id: (IBAN, ``statement_id``).** A bank feed chooses
its ids (docs/ingest.md); nothing makes two feeds agree on them, so ``stmt-1`` of one
account and ``stmt-1`` of another are two statements that share nothing. The router is
partitioned by IBAN, so one account's statements all meet in one partition, in order.

**Its content tells a redelivery from a reused id.** ``content_sha256`` is checked by the
router against the bytes, so for one (IBAN, id):

* the same ``content_sha256`` is the same statement sent again (a producer retry, a
  re-ingested file, a crash before a commit): a **duplicate**, absorbed by every sink;
* another ``content_sha256`` is **another statement under a reused id** (a feed that
  re-issued a corrected statement under the old id, or a feed whose ids are not stable).
  It is never dropped and never overwrites the first one: each sink keeps both, each
  under its own key, and says so (the global-file builder's outcome and log, the trace's
  candidates), because which one is right is for the cabinet to judge, not for us.

Why keep both rather than refuse the second to ``statements.invalid``: only operators
read that topic, so a refused correction would be a statement the cabinet never sees; and
refusing at the router would need a table of every (IBAN, id, content) ever routed in
each partition's state, growing for ever. The sinks already hold what they stored.

**The statement key** names one statement (IBAN, id and content) in 16 hex digits: it is
what tells two statements of one id apart where the id alone is shown, in a file name of
a drop or of the download's archive, in the webhook's ``webhook-id``, and in the trace
(``GET /statements/{id}?key=…``). The same statement always has the same key; the IBAN
is hashed, so the key shows no account.
"""

from __future__ import annotations

import hashlib
import re

KEY_LENGTH = 16
KEY_PATTERN = r"^[0-9a-f]{16}$"
_KEY = re.compile(KEY_PATTERN)


def statement_key(iban: str, statement_id: str, content_sha256: str) -> str:
    """The key of one statement: 16 lower-case hex digits of SHA-256 over its identity
    and its content, separated by a unit separator (no field can hold one)."""
    text = "\x1f".join((iban, statement_id, content_sha256))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def is_statement_key(value: str) -> bool:
    return _KEY.fullmatch(value) is not None
