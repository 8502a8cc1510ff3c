"""Pages as a user's browser shows them: headless Chromium with a fresh profile, its DOM after the scripts ran."""

from __future__ import annotations

import html
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest


def chromium() -> str | None:
    """The Chromium (or Chrome) binary on PATH, or None."""
    return next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="needs Chromium: apt-get install chromium (.ci/run installs it as root)"
)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # (closed again when the block ends: nothing answers there)


def rendered(url: str, profile: Path, *, offline: bool = False, budget_ms: int = 15000) -> str:
    """The DOM of ``url`` once its scripts have run (up to ``budget_ms`` of the page's virtual time).

    Args:
        url: the page.
        profile: an empty folder for the browser's profile (a first visit: no stored state).
        offline: send every request to a closed port on 127.0.0.1, so nothing can be loaded from a network.
    """
    command = [
        chromium() or "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    if offline:
        command.insert(1, f"--proxy-server=http://127.0.0.1:{_closed_port()}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout, done.stderr[-2000:]
    return done.stdout


def page_text(url: str, profile: Path) -> str:
    """What a first visit to ``url`` shows as text: :func:`rendered`'s DOM without scripts, styles and tags."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", rendered(url, profile), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))
