"""The delivery port: results, endpoint validation, parsing and the factory."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.delivery import (
    Deliverer,
    DeliveryConfigError,
    DeliveryResult,
    DirectoryDeliverer,
    DirectoryEndpoint,
    SftpDeliverer,
    SftpEndpoint,
    WebhookDeliverer,
    WebhookEndpoint,
    make_deliverer,
    parse_endpoint,
)
from config.catalogue import ConnectorSpec, default_catalogue
from tests.unit.delivery.factories import make_webhook_secret

SECRET = make_webhook_secret()
URL = "https://partner.example/hooks/statements?token=s3cr3t-token"


def webhook(**kwargs: object) -> WebhookEndpoint:
    fields: dict[str, object] = {"url": URL, "secrets": (SecretStr(SECRET),)}
    fields.update(kwargs)
    return WebhookEndpoint(**fields)  # type: ignore[arg-type]


def sftp() -> SftpEndpoint:
    return SftpEndpoint(
        host="sftp.partner.example",
        username="sobank",
        private_key_path=Path("/keys/id_ed25519"),
        known_hosts_path=Path("/keys/known_hosts"),
        passphrase=SecretStr("key-passphrase"),
    )


def test_retry_after_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="retry_after"):
        DeliveryResult.retry("x", retry_after=-1)
    assert DeliveryResult.delivered("ok").ok
    assert not DeliveryResult.disabled("gone", 410).ok


@pytest.mark.parametrize("timeout", [15.0, 20.0, 30.0])
def test_webhook_timeouts_within_15_to_30_seconds_are_accepted(timeout: float) -> None:
    assert webhook(timeout=timeout).timeout == timeout


@pytest.mark.parametrize("timeout", [0.5, 14.9, 30.1, 120])
def test_webhook_timeouts_outside_15_to_30_seconds_are_refused(timeout: float) -> None:
    with pytest.raises(DeliveryConfigError, match="15–30 s"):
        webhook(timeout=timeout)


def test_the_default_webhook_timeout_is_20_seconds() -> None:
    assert webhook().timeout == 20.0


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("plain-secret-without-prefix", "whsec_"),
        ("whsec_not*base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "decodes to 65 bytes"),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret: str, message: str) -> None:
    with pytest.raises(DeliveryConfigError, match=message) as caught:
        webhook(secrets=(SecretStr(secret),))
    assert secret not in str(caught.value)


def test_unpadded_secrets_are_accepted_like_the_reference_libraries_do() -> None:
    assert webhook(secrets=(SecretStr(SECRET.rstrip("=")),))


@pytest.mark.parametrize("url", ["ftp://partner.example/x", "partner.example/x", "https://"])
def test_webhook_urls_must_be_absolute_http(url: str) -> None:
    with pytest.raises(DeliveryConfigError, match="http"):
        webhook(url=url)


def test_a_webhook_needs_a_secret() -> None:
    with pytest.raises(DeliveryConfigError, match="at least one"):
        webhook(secrets=())


async def test_secrets_and_urls_never_appear_in_reprs() -> None:
    deliverer = WebhookDeliverer(webhook())
    texts = [repr(webhook()), repr(sftp()), repr(deliverer), repr(SftpDeliverer(sftp()))]
    await deliverer.close()

    for text in texts:
        assert SECRET not in text
        assert "s3cr3t-token" not in text
        assert "key-passphrase" not in text
    assert webhook().display_url == "https://partner.example/…"


def test_sftp_endpoints_are_checked() -> None:
    with pytest.raises(DeliveryConfigError, match="port"):
        SftpEndpoint("h", "u", Path("k"), Path("kh"), port=0)
    with pytest.raises(DeliveryConfigError, match="username"):
        SftpEndpoint("h", "", Path("k"), Path("kh"))
    with pytest.raises(DeliveryConfigError, match="timeout"):
        SftpEndpoint("h", "u", Path("k"), Path("kh"), timeout=0)


def test_parse_endpoint_builds_each_kind_from_plain_values() -> None:
    built = parse_endpoint("webhook", {"url": URL, "secrets": [SECRET], "timeout": "25"})
    assert isinstance(built, WebhookEndpoint)
    assert built.timeout == 25.0
    assert built.secrets[0].get_secret_value() == SECRET

    built_sftp = parse_endpoint(
        "sftp",
        {
            "host": "h",
            "username": "u",
            "private_key_path": "/k",
            "known_hosts_path": "/kh",
            "port": "2222",
        },
    )
    assert built_sftp == SftpEndpoint("h", "u", Path("/k"), Path("/kh"), port=2222)

    assert parse_endpoint("directory", {"path": "/drops/quadra"}) == DirectoryEndpoint(
        Path("/drops/quadra")
    )


def test_parse_endpoint_refuses_typos_and_bad_values_without_echoing_secrets() -> None:
    with pytest.raises(DeliveryConfigError, match="unknown webhook endpoint field"):
        parse_endpoint("webhook", {"url": URL, "secrets": [SECRET], "timout": 20})
    with pytest.raises(DeliveryConfigError, match="15–30 s") as caught:
        parse_endpoint("webhook", {"url": URL, "secrets": [SECRET], "timeout": 60})
    assert SECRET not in str(caught.value)
    with pytest.raises(DeliveryConfigError, match="port"):
        parse_endpoint(
            "sftp",
            {
                "host": "h",
                "username": "u",
                "private_key_path": "k",
                "known_hosts_path": "k",
                "port": "ssh",
            },
        )
    with pytest.raises(DeliveryConfigError, match="unknown adapter kind"):
        parse_endpoint("carrier-pigeon", {})  # type: ignore[arg-type]


async def test_make_deliverer_picks_the_adapter_of_the_connector(tmp_path: Path) -> None:
    catalogue = default_catalogue()
    made = [
        make_deliverer(catalogue["acd"], webhook()),
        make_deliverer(catalogue["cegid"], sftp()),
        make_deliverer(catalogue["quadra"], DirectoryEndpoint(tmp_path)),
    ]
    try:
        assert [type(d) for d in made] == [WebhookDeliverer, SftpDeliverer, DirectoryDeliverer]
        assert all(isinstance(d, Deliverer) for d in made)
    finally:
        for deliverer in made:
            await deliverer.close()


def test_make_deliverer_refuses_an_endpoint_of_another_kind(tmp_path: Path) -> None:
    spec = ConnectorSpec("acd", "ACD", "webhook")

    with pytest.raises(DeliveryConfigError, match="webhook adapter but was given a directory"):
        make_deliverer(spec, DirectoryEndpoint(tmp_path))
