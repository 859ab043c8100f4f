"""``statement-router partner secret``: the console script makes a Standard Webhooks secret
that our deliverer signs with and an independent verifier (the ``standardwebhooks``
package, in a real HTTP receiver) accepts, alone and during a rotation."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from adapters.delivery import WebhookEndpoint
from adapters.delivery.webhook import WebhookDeliverer
from tests.integration.worker.receiver import WebhookReceiver
from tests.unit.delivery.factories import make_delivery

SECRET = re.compile(r"whsec_[A-Za-z0-9+/]+={0,2}")


def partner_secret(cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("statement-router")
    return subprocess.run(
        [str(script), "partner", "secret"],
        env=dict(os.environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_partner_secret_prints_one_whsec_secret_of_32_random_bytes(tmp_path: Path) -> None:
    first, second = partner_secret(tmp_path), partner_secret(tmp_path)

    for run in (first, second):
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert len(lines) == 1 and SECRET.fullmatch(lines[0]), run.stdout
        key = base64.b64decode(lines[0].removeprefix("whsec_"), validate=True)
        assert 24 <= len(key) <= 32 and len(key) == 32
        assert "out of band" in run.stderr and "secrets = [new, old]" in run.stderr
        assert lines[0] not in run.stderr
    assert first.stdout != second.stdout
    assert list(tmp_path.iterdir()) == []  # printed, never written anywhere


async def test_a_standard_webhooks_receiver_accepts_the_generated_secret(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    old, new = [
        (await asyncio.to_thread(partner_secret, tmp_path)).stdout.strip() for _ in range(2)
    ]
    partner = receiver.partner("acd")

    async def deliver(secrets: tuple[str, ...], statement_id: str) -> str:
        endpoint = WebhookEndpoint(url=partner.url, secrets=tuple(SecretStr(s) for s in secrets))
        deliverer = WebhookDeliverer(endpoint)
        try:
            return (await deliverer.deliver(make_delivery(statement_id))).kind
        finally:
            await deliverer.close()

    partner.secret = old
    assert await deliver((old,), "stmt-secret-1") == "delivered"
    # Rotation: the connectors file lists secrets = [new, old]; each request carries both
    # signatures, so the partner verifies before and after switching to the new one.
    assert await deliver((new, old), "stmt-secret-2") == "delivered"
    partner.secret = new
    assert await deliver((new, old), "stmt-secret-3") == "delivered"
    # A secret the partner does not hold is refused by its verifier (401, permanent).
    assert await deliver((old,), "stmt-secret-4") == "permanent"

    assert [(h.webhook_id, h.verified) for h in receiver.of("acd")] == [
        ("stmt-secret-1", True),
        ("stmt-secret-2", True),
        ("stmt-secret-3", True),
        ("stmt-secret-4", False),
    ]
