"""The Durable Streams server: an ASGI app over pluggable storage.

``create_app()`` gives a Starlette app (storage opened in its lifespan);
``DurableStreamsApp(storage)`` is the bare ASGI app to mount in your own Starlette/FastAPI
application; ``serve()`` runs it with hypercorn (what ``resumable-streams serve`` does).
"""

from __future__ import annotations

from .app import DEFAULT_MAX_BODY_SIZE as DEFAULT_MAX_BODY_SIZE
from .app import DurableStreamsApp as DurableStreamsApp
from .app import create_app as create_app
from .serve import serve as serve

__all__ = ["DEFAULT_MAX_BODY_SIZE", "DurableStreamsApp", "create_app", "serve"]
