"""Console sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie.

The server keeps only the SHA-256 of that id, mapped to who signed in (a cabinet user's
``Actor`` or the operator) and the session's CSRF token. The bearer token typed at
sign-in is checked once by the store (or against the operator hash) and never kept, so
neither a memory dump nor a stolen session table yields a token. Sessions live in the
API process: a restart signs everyone out, which is acceptable for a console.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from routing.domain.model import Actor

COOKIE = "console_session"
SIGNIN_COOKIE = "console_signin"
DEFAULT_TTL = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in: ``actor`` for a cabinet user, None for the operator."""

    actor: Actor | None
    csrf: str
    expires_at: float

    @property
    def operator(self) -> bool:
        return self.actor is None


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    return bool(presented) and hmac.compare_digest(expected, presented or "")


class SessionStore:
    """In-memory sessions keyed by the hash of their id."""

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}

    def open(self, actor: Actor | None) -> tuple[str, Session]:
        """A new session; returns the id to put in the cookie (kept nowhere else)."""
        self._expire()
        session_id = secrets.token_urlsafe(32)
        session = Session(actor, secrets.token_urlsafe(32), time.monotonic() + self.ttl)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(_digest(session_id))
        if session is None or session.expires_at < time.monotonic():
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[key]
