"""The local Kafka node's cluster id is one the storage tool accepts as an argument."""

from __future__ import annotations

import uuid
from unittest import mock

from routing.broker import kafka_local

# UUID bytes whose URL-safe base64 starts with "-" (0xF8: the first sextet is 62, "-").
DASH_FIRST = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    fresh = uuid.UUID(int=1)
    with mock.patch.object(kafka_local.uuid, "uuid4", side_effect=[DASH_FIRST, fresh]):
        cluster_id = kafka_local._new_cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAQ"
