"""Kafka's default partitioner: murmur2 of the key, as the Java client, aiokafka and faust.

The router needs a partition two or three times per statement (the off-partition check,
the routed record, a held entry's changelog record). aiokafka's own ``murmur2`` is pure
Python and masks every step byte by byte (about 10 µs per key in the router's profile);
a word-at-a-time Python version still cost 2.4 µs, a cache in front of it 0.3 to 0.6 µs
per lookup. ``murmurhash2`` is the same function in C, at about 0.2 µs, so nothing is
cached. ``tests/unit/router/test_partitioner.py`` checks that it gives aiokafka's value
for every key, and Kafka's own test vector.
"""

from __future__ import annotations

from murmurhash2 import murmurhash2

_SEED = 0x9747B28C  # the Java client's Utils.murmur2


def murmur2(data: bytes) -> int:
    """Murmur2 as the Java client's ``Utils.murmur2``, as an unsigned 32-bit int (aiokafka's)."""
    return int(murmurhash2(data, _SEED))


def default_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client, aiokafka and faust pick for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
