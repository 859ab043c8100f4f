"""The size rule: how large a statement may be, and every record size derived from it.

One figure is decided, :data:`MAX_STATEMENT_BYTES`, the largest statement the system
accepts, counted in *decoded content bytes* (the bank file's bytes for one statement,
before base64). Everything else follows from it, so that a statement accepted at the
edge can never make a record too large for the broker further down the pipeline:

* every record that carries a statement (``statement.received``, ``partner-delivery``,
  ``global-file``, ``held``, ``dead-letter``, a replayed delivery, the router's held
  Table entry) is its content in base64 (:data:`MAX_STATEMENT_B64_BYTES`) plus an
  envelope of known, bounded fields: ids, IBAN, dates, the routing trace, cabinet and
  connector, and for a dead letter its attempts. :data:`MAX_ENVELOPE_BYTES` bounds that
  envelope generously (a routed envelope is about 1 KB; a dead letter with a few dozen
  attempts a few KB), and :data:`MAX_RECORD_BYTES` is their sum: the largest record value
  any role writes. A role that builds a larger one does not send it: it parks the input
  and refers to it (below);
* records without a statement (``delivery.outcome``, ``statement.invalid``, ``iban.state``)
  are small. A ``statement.invalid`` record copies the refused value only up to
  :data:`MAX_INVALID_COPY_BYTES` and its reason up to :data:`MAX_REASON_CHARS`;
* the broker's limit, :data:`BROKER_MESSAGE_BYTES`, is above :data:`MAX_RECORD_BYTES` with
  a margin of about 600 KB (for the record batch's own overhead, and for an envelope that
  grows with a future field). Every topic the pipeline creates gets it as
  ``max.message.bytes``, every producer as ``max_request_size`` and every consumer as its
  fetch sizes, so a record one role may write is a record every other role may read.

Why 1 MiB: a bank statement is one account over one period; the largest the drills met was
about 1 MB (a camt.053 month of a busy account), and its base64 with the envelope still fits
a 2 MiB record with room to spare. Larger files are refused at the edge with their size and
this limit, never deep in the pipeline.

Park and refer: when a record a role derives from its input would not fit (an input over the
limit, a malformed record too large to copy), the role does not copy it. It writes a
``statement.invalid/v1`` (or, for the adapters, a parked dead letter) that refers to the input
by topic, partition, offset and size, counts it, logs it once, and moves on.
"""

from __future__ import annotations

__all__ = [
    "BROKER_MESSAGE_BYTES",
    "MAX_ENVELOPE_BYTES",
    "MAX_INVALID_COPY_BYTES",
    "MAX_INVALID_KEY_BYTES",
    "MAX_REASON_CHARS",
    "MAX_RECORD_BYTES",
    "MAX_STATEMENT_B64_BYTES",
    "MAX_STATEMENT_BYTES",
    "TOPIC_CONFIGS",
    "base64_length",
    "decoded_length",
]


def base64_length(size: int) -> int:
    """The length of ``size`` bytes in padded base64 (RFC 4648)."""
    return 4 * ((size + 2) // 3)


def decoded_length(b64: str) -> int:
    """The number of bytes a padded base64 text decodes to, without decoding it."""
    if not b64:
        return 0
    return len(b64) // 4 * 3 - b64[-2:].count("=")


MAX_STATEMENT_BYTES = 1_048_576
"""The largest statement accepted: 1 MiB of decoded content (the setting
``MAX_STATEMENT_BYTES`` may lower it, never raise it)."""

MAX_STATEMENT_B64_BYTES = base64_length(MAX_STATEMENT_BYTES)
"""1,398,104: its base64 (``content_b64``)."""

MAX_ENVELOPE_BYTES = 65_536
"""What any record adds around ``content_b64``, at most (ids, trace, attempts…)."""

MAX_RECORD_BYTES = MAX_STATEMENT_B64_BYTES + MAX_ENVELOPE_BYTES
"""1,463,640: the largest record value any role writes, and the largest
``statements.received`` value the router reads."""

BROKER_MESSAGE_BYTES = 2_097_152
"""2 MiB: the topics' ``max.message.bytes``, the producers' ``max_request_size`` and the
consumers' fetch sizes."""

MAX_INVALID_COPY_BYTES = MAX_STATEMENT_BYTES // 2
"""512 KiB: the largest raw value a ``statement.invalid/v1`` copies (683 KiB of base64); a
larger one is referred to by topic, partition, offset and size."""

MAX_INVALID_KEY_BYTES = 1_024
"""The largest record key a ``statement.invalid/v1`` copies (and keeps as its own key):
the contract's keys are IBANs, statement ids and cabinet ids, all far shorter."""

MAX_REASON_CHARS = 2_000
"""A reason is cut to this length: it may quote part of a hostile input (a schema name)."""

TOPIC_CONFIGS: dict[str, str] = {"max.message.bytes": str(BROKER_MESSAGE_BYTES)}
"""The configuration every topic of the pipeline is created with (Tansu and Kafka accept it)."""

