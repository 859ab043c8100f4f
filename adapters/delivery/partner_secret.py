"""Webhook signing secrets for partners: ``whsec_`` + base64 of 32 random bytes.

So bank's operator makes the secret (``statement-router partner secret``) and gives it to
the partner out of band; the connectors file refers to it (``secret_file``/``secret_env``)
and every request is signed with it (``adapters.delivery.webhook``). Making it here rather
than accepting whatever a partner portal issues keeps its strength ours: 32 bytes from
the OS's CSPRNG, inside Standard Webhooks' 24–64, in the format every reference library
reads (``decode_webhook_secret`` checks it).
"""

from __future__ import annotations

import base64
import secrets

from adapters.delivery.port import WEBHOOK_SECRET_PREFIX, decode_webhook_secret

SECRET_BYTES = 32


def new_webhook_secret() -> str:
    """A fresh ``whsec_<base64>`` signing secret (32 random bytes)."""
    secret = WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()
    decode_webhook_secret(secret)  # the same check the connectors file applies
    return secret
