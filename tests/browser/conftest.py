"""Real-browser tests of the admin: Playwright driving Debian's Chromium, with nothing downloaded
at run time (shared browser-testing.md). Run as their own pytest invocation with
DJANGO_ALLOW_ASYNC_UNSAFE=true (`make test` does): the sync Playwright API keeps an event loop in
the main thread, which Django's ORM would otherwise refuse."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.testing import books_wipe
from tests.conftest import skip_or_fail

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/lib/chromium/chromium"))
# Keep Chromium off the network; do not pass --disable-features (it replaces Playwright's list).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE") != "true":
        skip_or_fail("browser tests need DJANGO_ALLOW_ASYNC_UNSAFE=true (run them as make does)")
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(autouse=True)
def _wipe_books_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """live_server tests commit; the flush that ends them may not TRUNCATE the ledger while it
    holds entries (ledger_refuse_truncate), so the books are emptied first."""
    request.getfixturevalue("transactional_db")
    yield
    books_wipe()
