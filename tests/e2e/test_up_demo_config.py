"""``up --demo`` as an operator and a partner try it (issue 14, items 15 and 16).

* The banner prints an operator token, and that token opens ``/ops`` (a user's does not).
* A ``CONNECTORS_FILE`` that configures ``acd`` is honoured: the demo's own receiver does
  not replace it, the banner says where each endpoint comes from, and the retry policy is
  the documented one (``DELIVERY_*``), printed in the banner.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.e2e.up_process import UpProcess, cli, up_environment
from tests.e2e.up_process import ok as succeeded
from tests.eventually import eventually
from tests.integration.worker.receiver import WebhookReceiver


def _banner_value(out: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)}\s+(\S+)", out, re.MULTILINE)
    assert found is not None, f"no {label!r} line in:\n{out}"
    return found.group(1)


async def test_demo_prints_an_operator_token_that_opens_ops(tmp_path: Path) -> None:
    env = up_environment(tmp_path / "var")
    env.pop("OPERATOR_TOKEN_SHA256", None)
    up = UpProcess(env, tmp_path / "logs", "demo", "--demo")
    try:
        out = await up.ready()
        token = _banner_value(out, "demo operator token")
        user_token = _banner_value(out, "demo admin token")
        assert token.startswith("sro_"), out
        api = f"http://127.0.0.1:{env['API_PORT']}"
        async with httpx.AsyncClient(base_url=api, timeout=30) as client:
            ok = await client.get("/ops/dlq/acd", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["connector_id"] == "acd"
            as_user = await client.get(
                "/ops/dlq/acd", headers={"Authorization": f"Bearer {user_token}"}
            )
            assert as_user.status_code == 401, as_user.text
            anonymous = await client.get("/ops/dlq/acd")
            assert anonymous.status_code == 401
            # GET /connectors reports the adapter actually used: the demo's webhook
            # receiver for acd, an embedded drop for every other partner (issue 14 #10).
            connectors = await client.get(
                "/connectors", headers={"Authorization": f"Bearer {user_token}"}
            )
            assert {c["connector_id"]: c["adapter"] for c in connectors.json()} == {
                "acd": "webhook", "cegid": "directory", "quadra": "directory",
                "pennylane": "directory",
            }, connectors.text
            # Its CLI twin, on the demo's data directory as the banner says, agrees.
            twin = cli({**env, "DATA_DIR": str(tmp_path / "var" / "demo")},
                       "connectors", "--json")
            assert json.loads(succeeded(twin)) == connectors.json()
        assert await up.interrupt() == 0, up.report()
    finally:
        up.stop_if_running()


async def test_demo_honours_the_connectors_file_and_the_documented_retries(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    partner = receiver.partner("acd")
    connectors = tmp_path / "connectors.toml"
    connectors.write_text(
        f'[connectors.acd]\nurl = "{partner.url}"\nsecret_env = "ACD_TEST_WHSEC"\n',
        encoding="utf-8",
    )
    env = up_environment(
        tmp_path / "var",
        CONNECTORS_FILE=str(connectors),
        ACD_TEST_WHSEC=partner.secret,
        DELIVERY_MAX_ATTEMPTS="7",
    )
    up = UpProcess(env, tmp_path / "logs", "demo", "--demo")
    try:
        out = await up.ready()
        port = partner.url.split(":")[2].split("/")[0]
        acd_line = next(line for line in out.splitlines() if line.startswith("partner    acd"))
        assert f"webhook http://127.0.0.1:{port}/…" in acd_line, out
        assert "(CONNECTORS_FILE)" in acd_line, out
        assert "the demo's webhook receiver" not in out, out
        quadra = next(line for line in out.splitlines() if line.startswith("partner    quadra"))
        assert "(embedded drop)" in quadra, out
        assert "retries    7 attempts, waits up to 1 s doubling to 300 s" in out, out
        # The demo's acd statements reached the configured partner, signatures verified
        # with the standardwebhooks package; the demo's own receiver got none.
        delivered = await eventually(
            lambda: receiver.delivered("acd"), "5 acd deliveries", done=lambda d: len(d) >= 5
        )
        assert all(hit.verified for hit in receiver.of("acd"))
        assert len({hit.webhook_id for hit in delivered}) == 5
        assert not (tmp_path / "var" / "demo" / "partners" / "acd").exists()
        assert "partner acd: 5/5 statements delivered" in out
        assert await up.interrupt() == 0, up.report()
    finally:
        up.stop_if_running()
