"""A random 127/8 address for a test origin that must listen on a provider's real port (443): this machine's other
test runs, and other xdist workers, may hold 127.0.0.1:443."""

from __future__ import annotations

import random

__all__ = ["random_loopback"]


def random_loopback() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
