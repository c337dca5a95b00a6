"""Structured-concurrency building blocks shared by the faces (anyio + ``_protocol`` only)."""
