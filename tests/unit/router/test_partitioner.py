"""Our murmur2 picks exactly the partitions aiokafka's (hence Kafka's Java client's) does."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from routing.broker import partitioner
from routing.broker.partitioner import default_partition, murmur2


@given(st.binary(max_size=200))
def test_murmur2_matches_aiokafka(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_default_partition_is_the_java_clients(key: bytes, partitions: int) -> None:
    expected = (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions
    assert default_partition(key, partitions) == expected
    assert default_partition(key, partitions) == expected  # from the cache


def test_the_cache_of_hashes_is_emptied_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioner, "_HASHES", {})
    monkeypatch.setattr(partitioner, "_HASHES_LIMIT", 3)
    keys = [f"FR76{n}".encode() for n in range(7)]
    for key in keys:
        assert default_partition(key, 6) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 6
        assert len(partitioner._HASHES) <= 3
    assert keys[-1] in partitioner._HASHES


def test_known_value() -> None:
    # Kafka's own test vector (org.apache.kafka.common.utils.UtilsTest#testMurmur2):
    # "21" hashes to -973932308 as a signed int.
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
