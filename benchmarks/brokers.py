"""The broker a benchmark runs on: ``--broker tansu`` (embedded) or ``--broker kafka``.

Every broker-bound benchmark takes the same option and starts its own broker through the
same launchers the tests and ``statement-router up`` use, so a figure says which broker
produced it (``broker_label``) and the two brokers are measured the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from routing.broker import EmbeddedBroker
from routing.broker.kafka_local import KAFKA_VERSION, LocalKafka
from routing.broker.process import BrokerProcess

BROKERS = ("tansu", "kafka")


def add_broker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default="tansu",
        help="tansu: the embedded broker (memory); kafka: a local Apache Kafka node (needs a JDK)",
    )


def local_broker(kind: str, log_dir: Path) -> BrokerProcess:
    """A not-yet-started broker of ``kind`` whose log (and Kafka's data) go under ``log_dir``."""
    if kind == "kafka":
        return LocalKafka(log_dir=log_dir)
    return EmbeddedBroker(log_dir=log_dir)


def broker_label(kind: str) -> str:
    """What the JSON line says about the broker."""
    if kind == "kafka":
        return f"Apache Kafka {KAFKA_VERSION} (local KRaft node, one JVM)"
    return "embedded Tansu (memory storage engine)"
