"""Durable Streams header and query-parameter names (PROTOCOL.md), shared by server and client.

Header names are given in their canonical spelling; HTTP header matching is case-insensitive.
"""

from __future__ import annotations

from typing import Final

# Request and response headers
STREAM_NEXT_OFFSET: Final = "Stream-Next-Offset"
STREAM_UP_TO_DATE: Final = "Stream-Up-To-Date"
STREAM_CLOSED: Final = "Stream-Closed"
STREAM_CURSOR: Final = "Stream-Cursor"
STREAM_TTL: Final = "Stream-TTL"
STREAM_EXPIRES_AT: Final = "Stream-Expires-At"
STREAM_SEQ: Final = "Stream-Seq"
STREAM_FORKED_FROM: Final = "Stream-Forked-From"
STREAM_FORK_OFFSET: Final = "Stream-Fork-Offset"
STREAM_FORK_SUB_OFFSET: Final = "Stream-Fork-Sub-Offset"
PRODUCER_ID: Final = "Producer-Id"
PRODUCER_EPOCH: Final = "Producer-Epoch"
PRODUCER_SEQ: Final = "Producer-Seq"
PRODUCER_EXPECTED_SEQ: Final = "Producer-Expected-Seq"
PRODUCER_RECEIVED_SEQ: Final = "Producer-Received-Seq"
SSE_DATA_ENCODING: Final = "Stream-SSE-Data-Encoding"

# Query parameters
OFFSET_PARAM: Final = "offset"
LIVE_PARAM: Final = "live"
CURSOR_PARAM: Final = "cursor"

# Reserved offsets and live modes
OFFSET_BEGINNING: Final = "-1"
OFFSET_NOW: Final = "now"
LIVE_LONG_POLL: Final = "long-poll"
LIVE_SSE: Final = "sse"

# SSE event names
SSE_EVENT_DATA: Final = "data"
SSE_EVENT_CONTROL: Final = "control"

JSON_CONTENT_TYPE: Final = "application/json"
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
