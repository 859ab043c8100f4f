"""Our murmur2 picks exactly the partitions aiokafka's (hence Kafka's Java client's) does."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from routing.broker.partitioner import default_partition, murmur2


@given(st.binary(max_size=200))
def test_murmur2_matches_aiokafka(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_default_partition_is_the_java_clients(key: bytes, partitions: int) -> None:
    expected = (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions
    assert default_partition(key, partitions) == expected


def test_known_value() -> None:
    # Kafka's own test vector (org.apache.kafka.common.utils.UtilsTest#testMurmur2):
    # "21" hashes to -973932308 as a signed int.
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
