"""IBAN masking and redaction, through the processor chain ``configure_logging`` installs.

``capture_logs()`` replaces the configured processors with its capturing one, so on its
own it would test nothing of ours: the tests hand it the processors that the real
``configure_logging`` put in structlog's configuration (all but the renderer), read back
from that configuration, and capture what comes out of them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from routing.domain.iban import mask_iban
from routing.observability.logs import redact
from tests.unit.delivery.factories import make_delivery

from .conftest import Configure
from .helpers import clear_ibans

IBAN = "FR7630006000011234567890189"
SPACED = "FR76 3000 6000 0112 3456 7890 189"
MASKED = "FR76 **** **** **** **** ***0 189"


@pytest.mark.parametrize(
    ("given", "masked"),
    [
        (IBAN, MASKED),
        (SPACED, MASKED),
        ("fr76 3000 6000 0112 3456 7890 189", MASKED),
        ("fr7630006000011234567890189", MASKED),
        ("DE89370400440532013000", "DE89 **** **** **** **30 00"),
        ("GB82 WEST 1234 5698 7654 32", "GB82 **** **** **** **54 32"),
        ("BE68539007547034", "BE68 **** **** 7034"),
    ],
)
def test_mask_iban_keeps_country_check_digits_and_last_four(given: str, masked: str) -> None:
    assert mask_iban(given) == masked


def test_mask_iban_hides_everything_of_a_too_short_value() -> None:
    assert mask_iban("FR76 12") == "******"


def _chain() -> list[Any]:
    """The configured processors without the renderer (capture_logs collects dicts)."""
    processors = list(structlog.get_config()["processors"])
    assert redact in processors, "configure_logging must install the redact processor"
    return processors[:-1]


def _log_everything(log: Any) -> None:
    log.info(f"statement for {IBAN} parked")
    log.info("spaced", iban=SPACED)
    log.info("nested", state={"ibans": [IBAN, {"deeper": f"x {SPACED} y"}]}, pair=(IBAN, 1))
    log.info("lower", iban=IBAN.lower())
    log.info("in a file name", file=f"2026-01-02_{IBAN}_st-1.txt")
    try:
        raise ValueError(f"partner refused {IBAN}")
    except ValueError:
        log.exception("delivery_failed")
    log.info("error text", error=repr(ValueError(f"bad {IBAN}")))


def _text(entries: list[dict[str, Any]]) -> str:
    return "\n".join(repr(e) for e in entries)


def test_the_configured_chain_masks_ibans_wherever_they_appear(configured: Configure) -> None:
    configured("json")
    with capture_logs(processors=_chain()) as entries:
        _log_everything(structlog.get_logger("tests.logs"))

    assert len(entries) == 7
    assert clear_ibans(_text(entries)) == []
    by_event = {e["event"]: e for e in entries}
    assert by_event[f"statement for {MASKED} parked"]["level"] == "info"
    assert by_event["spaced"]["iban"] == MASKED
    assert by_event["lower"]["iban"] == MASKED
    assert by_event["nested"]["state"] == {"ibans": [MASKED, {"deeper": f"x {MASKED} y"}]}
    assert by_event["nested"]["pair"] == [MASKED, 1]
    assert by_event["in a file name"]["file"] == f"2026-01-02_{MASKED}_st-1.txt"
    exception = by_event["delivery_failed"]["exception"]
    assert "Traceback" in exception and f"partner refused {MASKED}" in exception
    assert MASKED in by_event["error text"]["error"]


def test_negative_control_the_check_catches_an_unmasked_iban(configured: Configure) -> None:
    """The same lines through the same chain minus ``redact``: the IBAN check must fire on
    every form, or the test above would pass whatever the code did."""
    configured("json")
    unguarded = [p for p in _chain() if p is not redact]
    with capture_logs(processors=unguarded) as entries:
        _log_everything(structlog.get_logger("tests.logs"))

    found = clear_ibans(_text(entries))
    assert IBAN in found and SPACED in found and IBAN.lower() in found
    assert len(found) >= 8


def test_secrets_and_statement_content_are_redacted(configured: Configure) -> None:
    configured("console")
    delivery = make_delivery("st-model-1")
    with capture_logs(processors=_chain()) as entries:
        structlog.get_logger("tests.logs").warning(
            "everything_at_once",
            content_b64=delivery.content_b64,
            raw=b"0130006 raw bytes",
            webhook_secret="whsec_abc",
            Authorization="Bearer t0k3n",
            operator_token_sha256="0" * 64,
            password="hunter2",
            headers={"authorization": "Bearer t0k3n", "webhook-id": "st-model-1"},
            body=b"{}",
            delivery=delivery,
            note=f"quoted content {delivery.content_b64 * 2}",
            payload_size=12,
        )
    [entry] = entries
    for key in ("content_b64", "raw", "webhook_secret", "Authorization",
                "operator_token_sha256", "password", "body"):
        assert entry[key] == "[redacted]", key
    assert entry["headers"] == {"authorization": "[redacted]", "webhook-id": "st-model-1"}
    # A model is logged field by field: its content is dropped, its IBAN masked.
    assert entry["delivery"]["content_b64"] == "[redacted]"
    assert entry["delivery"]["iban"] == MASKED
    assert entry["delivery"]["statement_id"] == "st-model-1"
    assert delivery.content_b64 not in entry["note"]
    assert entry["payload_size"] == 12
    text = _text(entries)
    for secret in ("whsec_abc", "t0k3n", "hunter2", delivery.content_b64):
        assert secret not in text


def test_a_hex_digest_is_not_mistaken_for_an_iban(configured: Configure) -> None:
    configured("json")
    digest = "ab12" + "cdef0123456789" * 4  # two letters, two digits, then hex
    with capture_logs(processors=_chain()) as entries:
        structlog.get_logger("tests.logs").info("hashed", content_sha256=digest)
    assert entries[0]["content_sha256"] == digest


def test_standard_library_records_are_masked_and_rendered_as_json(
    configured: Configure, capsys: pytest.CaptureFixture[str]
) -> None:
    """faust, aiokafka and alembic log through ``logging``: same guards, same JSON."""
    configured("json")
    try:
        raise RuntimeError(f"could not route {IBAN}")
    except RuntimeError:
        logging.getLogger("aiokafka.consumer").warning("fetch %s failed", SPACED, exc_info=True)
    err = capsys.readouterr().err
    assert clear_ibans(err) == []
    [line] = [json.loads(li) for li in err.splitlines() if li.strip()]
    assert line["event"] == f"fetch {MASKED} failed"
    assert line["logger"] == "aiokafka.consumer" and line["level"] == "warning"
    assert f"could not route {MASKED}" in line["exception"]
