"""Sans-IO protocol code: pure, synchronous, stdlib only.

Nothing in this package performs I/O or imports anything outside the standard library.
"""
