"""The ``Stream-Cursor`` algorithm (PROTOCOL.md §8.1): CDN collapsing intervals with jitter.

The cursor is the number of whole intervals (20 s by default) since 2024-10-09T00:00:00Z. A
client echoes it back; when its cursor is not behind the current interval, the server returns
a strictly greater value (the client's plus a random 1-3600 s jitter rounded up to whole
intervals) so that collapsed long-polls never loop on one cache key.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Final

__all__ = ["CURSOR_EPOCH", "DEFAULT_INTERVAL", "next_cursor"]

CURSOR_EPOCH: Final = 1728432000.0  # 2024-10-09T00:00:00Z as a Unix timestamp
DEFAULT_INTERVAL: Final = 20.0
_MAX_JITTER: Final = 3600


def next_cursor(
    now: float,
    client_cursor: str | None = None,
    *,
    interval: float = DEFAULT_INTERVAL,
    randint: Callable[[int, int], int] = random.randint,
) -> str:
    """Return the cursor for a response generated at Unix time ``now``.

    ``client_cursor`` is the request's ``cursor`` parameter (ignored unless it is a plain
    non-negative decimal integer).
    """
    current = max(0, math.floor((now - CURSOR_EPOCH) / interval))
    if client_cursor is not None and client_cursor.isascii() and client_cursor.isdigit():
        client = int(client_cursor)
        if client >= current:
            jitter = randint(1, _MAX_JITTER)
            return str(client + max(1, math.ceil(jitter / interval)))
    return str(current)
