"""Headless Chromium for the report tests: a screenshot of a page and the URLs it requested."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


def _command(profile: Path, *args: str) -> list[str]:
    """Headless Chromium with no background traffic, a fresh profile and ``args``."""
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]


def browse(url: str, tmp_path: Path, name: str) -> tuple[Path, list[str]]:
    """Screenshot ``url`` in headless Chromium; return the PNG and the http(s) URLs the page
    itself requested (requests made by the browser for its own services are left out)."""
    shot, netlog = tmp_path / f"{name}.png", tmp_path / f"{name}-net.json"
    cmd = _command(
        tmp_path / (name + "-profile"),
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={netlog}",
        f"--screenshot={shot}",
        "--window-size=1200,900",
        url,
    )
    subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert shot.exists(), "Chromium wrote no screenshot"
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    page_urls = [
        ev["params"]["url"]
        for ev in log["events"]
        if ev["type"] == start_job
        and "url" in ev.get("params", {})
        and ev["params"].get("initiator") != "not an origin"  # browser-internal services
    ]
    return shot, [u for u in page_urls if u.startswith(("http:", "https:"))]


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` after its scripts ran, as headless Chromium serialises it."""
    cmd = _command(profile, "--dump-dom", url)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout
