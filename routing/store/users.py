"""Users and their bearer tokens, stored hashed (a leaked database holds no usable token)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import insert, select

from routing.domain.errors import AuthenticationFailed, UnknownCabinet
from routing.domain.ids import ensure_valid_id
from routing.domain.model import Actor, Profile
from routing.ports import CreatedUser, UserStore
from routing.store.base import SqlStoreBase
from routing.store.errors import StoreIntegrityError
from routing.store.tables import users

TOKEN_PREFIX = "srt_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored for a token (the token itself is never stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SqlUsers(SqlStoreBase, UserStore):
    """Users of a cabinet, with a profile, and the tokens that authenticate them."""

    async def create_user(
        self, cabinet_id: str, profile: Profile, name: str | None = None
    ) -> CreatedUser:
        profile = Profile(profile)
        ensure_valid_id("cabinet", cabinet_id)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        user_id = ensure_valid_id("user", "usr_" + secrets.token_hex(12))
        try:
            async with self._write() as conn:
                if not await self._cabinet_exists(conn, cabinet_id):
                    raise UnknownCabinet(cabinet_id)
                await conn.execute(
                    insert(users).values(
                        id=user_id,
                        cabinet_id=cabinet_id,
                        profile=profile.value,
                        name=name,
                        token_hash=hash_token(token),
                        created_at=self._now(),
                    )
                )
        except StoreIntegrityError as exc:
            if exc.kind == "foreign_key":
                raise UnknownCabinet(cabinet_id) from exc
            raise
        return CreatedUser(user_id=user_id, cabinet_id=cabinet_id, profile=profile, token=token)

    async def authenticate(self, token: str) -> Actor:
        failed = AuthenticationFailed("invalid or unknown token")
        if not token:
            raise failed
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(users.c.id, users.c.cabinet_id, users.c.profile).where(
                        users.c.token_hash == hash_token(token)
                    )
                )
            ).first()
        if row is None:
            raise failed
        return Actor(user_id=row.id, cabinet_id=row.cabinet_id, profile=Profile(row.profile))
