"""Per-row seeds: a function of the run's base seed and the row's identity, never of its position.

`row_seed(base, identity, generation)` is what a row gets on its first try; retries take the next
seeds (+1, +2, ...). `generation` counts how often the row was regenerated after the user threw a
result away, so a regeneration is a new picture while a rerun of the same row is the same picture.
"""

from __future__ import annotations

import hashlib
import secrets

SEED_SPACE = 2**31  # leaves room for +retries and fits every seed consumer (numpy, torch, Excel cells)


def random_base_seed() -> int:
    return secrets.randbelow(SEED_SPACE)


def row_seed(base_seed: int, identity: str, generation: int = 0) -> int:
    digest = hashlib.blake2b(f"{base_seed}:{identity}:{generation}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_SPACE
