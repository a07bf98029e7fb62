"""Screenshot a ``report.html`` in a headless browser, to check by eye that no title is cut off and the class-level
view reads: one screenshot of the whole page (a window as tall as ``--height``), trimmed of the blank below the page
and cut into tiles (``page_01.png``, ...) small enough to look at.

Usage: python tools/screenshot_report.py RUN/report.html [--out DIR] [--width 1400] [--height 16000] [--tile 2000]

Uses the first of $BROWSER, chromium, chromium-browser, google-chrome, google-chrome-stable found; when none is
installed it says so and exits with status 2 (Debian: ``apt-get install chromium``). The test suite does not need it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """Path of a Chromium-family browser, or ``None``."""
    for name in (os.environ.get("BROWSER"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    return None


def screenshot(browser: str, url: str, out: Path, size: str) -> Path:
    """One headless screenshot of ``url`` at window ``size`` (``WxH``)."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--window-size={size.replace('x', ',')}", f"--screenshot={out}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot for {url}")
    return out


def tiles(full: Path, out: Path, height: int) -> list[Path]:
    """Cut ``full`` into tiles ``height`` px tall, after dropping the blank rows below the page."""
    from PIL import Image, ImageChops

    with Image.open(full) as im:
        rgb = im.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    bottom = box[3] + 20 if box else rgb.height
    paths = []
    for k, top in enumerate(range(0, bottom, height), 1):
        paths.append(out / f"page_{k:02d}.png")
        rgb.crop((0, top, rgb.width, min(bottom, top + height))).save(paths[-1])
    return paths


def main(argv: list[str] | None = None) -> int:
    """Screenshot the report's top and each section; print the files written."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, help="folder for the PNGs (default: screenshots/ beside the report)")
    ap.add_argument("--width", type=int, default=1400, help="browser window width (default 1400)")
    ap.add_argument("--height", type=int, default=16000, help="window height, at least the page's (default 16000)")
    ap.add_argument("--tile", type=int, default=2000, help="height of each tile (default 2000)")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"no report at {args.report}", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print("no headless browser found (tried $BROWSER, " + ", ".join(BROWSERS) + "); install one, e.g. "
              "apt-get install chromium", file=sys.stderr)
        return 2
    out = args.out or args.report.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    full = screenshot(browser, args.report.resolve().as_uri(), out / "page.png", f"{args.width}x{args.height}")
    for path in [full, *tiles(full, out, args.tile)]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
