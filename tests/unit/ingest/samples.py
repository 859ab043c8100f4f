"""Where the checked-in sample bank files live, and how to read one."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[3] / "examples" / "bank-files"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()
