"""Seeds derived from values by hashing, so that a random stream depends on what it is for (a prompt, a sample
index, a step), not on batching, order or process."""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (SHA-256 of their ``str`` forms joined by NUL)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
