"""Screenshot a page of a local UI in headless Chromium, after running JavaScript in it (to close a panel, pick a tab).

Chromium's command line can only shoot a page as it first renders; the MLflow UI opens its assistant panel on a
first visit, so this drives Chromium over its DevTools protocol (``websockets`` is in the lock already):
load the page, wait, run the given script, wait, capture. Used by docs/screenshots.sh.

    python docs/screenshot.py URL OUT.png [--size 1900,1100] [--js "document.querySelector(...).click()"]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from itertools import count
from pathlib import Path

import websockets

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


async def _shoot(ws_url: str, url: str, script: str | None, settle_s: float) -> bytes:
    ids = count(1)
    async with websockets.connect(ws_url, max_size=64 << 20) as ws:

        async def call(method: str, **params: object) -> dict:
            message_id = next(ids)
            await ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
            while True:
                answer = json.loads(await ws.recv())
                if answer.get("id") == message_id:
                    return answer.get("result", {})

        await call("Page.enable")
        await call("Page.navigate", url=url)
        await asyncio.sleep(settle_s)
        if script:
            await call("Runtime.evaluate", expression=script, awaitPromise=True)
            await asyncio.sleep(settle_s / 2)
        return base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"])


def screenshot(
    url: str, out: Path, size: tuple[int, int] = (1900, 1100), script: str | None = None, settle_s: float = 8.0
) -> None:
    """Render ``url`` in a fresh headless Chromium profile, run ``script`` in the page, save a PNG to ``out``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="visionops-shot-", ignore_cleanup_errors=True) as profile:
        port_file = Path(profile) / "DevToolsActivePort"
        browser = subprocess.Popen(
            [
                chromium,
                *FLAGS,
                f"--window-size={size[0]},{size[1]}",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its renderer and zygote processes go with it
        )
        try:
            deadline = time.monotonic() + 30
            while not port_file.is_file() or len(port_file.read_text().split()) < 2:
                if time.monotonic() > deadline:
                    raise SystemExit("chromium did not open its DevTools port within 30 s")
                time.sleep(0.2)
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                page = next(t for t in json.loads(response.read()) if t["type"] == "page")
            out.write_bytes(asyncio.run(_shoot(page["webSocketDebuggerUrl"], url, script, settle_s)))
        finally:
            os.killpg(browser.pid, signal.SIGTERM)
            browser.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1900,1100", help="window width,height")
    parser.add_argument("--js", help="JavaScript run in the page before the capture")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split(","))
    screenshot(args.url, args.out, (width, height), args.js)


if __name__ == "__main__":
    main()
