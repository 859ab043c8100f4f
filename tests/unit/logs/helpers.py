"""What the logging tests look for in the output: an IBAN in clear, content, a secret."""

from __future__ import annotations

import json
import re
from typing import Any

# A French IBAN in clear, compact or printed in groups of four, any case.
_CLEAR_FR = re.compile(r"FR\d{2}(?: ?[0-9A-Z]){23}", re.IGNORECASE)


def clear_ibans(text: str) -> list[str]:
    """Every French IBAN that appears unmasked in ``text`` (a masked one has ``*``)."""
    return _CLEAR_FR.findall(text)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of ``text`` as a JSON object; fails on any other line."""
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        assert isinstance(doc, dict), f"not a JSON object: {line!r}"
        parsed.append(doc)
    return parsed
