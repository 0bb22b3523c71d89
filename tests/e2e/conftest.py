"""Fixtures shared by the end-to-end tests that open pages in headless Chromium."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary; a missing one skips the test locally and fails it in CI."""
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (CI must have it: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM
