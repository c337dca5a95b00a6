"""Fixtures for the headless-Chromium tests: one browser per module, real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .webdriver import Browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium via chromedriver (fails, never skips, when either is missing)."""
    log: Path = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    with Browser(log) as opened:
        yield opened
