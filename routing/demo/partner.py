"""A partner for the demo: a webhook receiver on 127.0.0.1 that checks Standard Webhooks
signatures and files each statement it accepts, as a production tool would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[-1] for s in headers.get("webhook-signature", "").split()]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


def demo_partner(secret: str, inbox: Path, port: int) -> uvicorn.Server:
    """The receiver; ``serve()`` it. Accepted statements land in ``inbox/<webhook-id>.json``."""
    inbox.mkdir(parents=True, exist_ok=True)

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not signature_ok(secret, headers, body):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in headers["webhook-id"])
        (inbox / f"{name}.json").write_bytes(body)
        return JSONResponse({"received": headers["webhook-id"]})

    app = Starlette(routes=[Route("/statements", receive, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                            access_log=False, lifespan="off")
    return uvicorn.Server(config)
