"""One TLS context for every HTTP client the Durable Streams client creates itself."""

from __future__ import annotations

import functools
import ssl

import httpx2

__all__ = ["default_ssl_context"]


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx2's default verifying context, built once per process.

    Building it loads the CA bundle (~15 ms); a client per ``stream()`` call would pay that
    every time. An ``SSLContext`` may be shared by many clients and threads. Pass your own
    ``client=`` for other TLS settings.
    """
    return httpx2.create_ssl_context()
