"""Headless Chromium on a report: its first screen as report.png and what its check script saw.

Chromium (Debian's ``chromium``) runs as its own process group through
``bench.processes`` with a fresh profile folder, offline-quiet flags and a 1280 × 800
window, and is killed in ``finally`` whatever happens. report.html's own script writes what it
measured into ``data-*`` attributes of <body> (images decoded, tables laid out, where the answer
section lies, elements overflowing their container); :func:`checks` reads them back.
"""
import os
import re
import shutil
import subprocess
import tempfile

from bench import processes

NAMES = ("chromium", "chromium-browser")
WINDOW = (1280, 800)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-extensions", "--mute-audio")
TIMEOUT_S = 60.0


class BrowserError(Exception):
    """Chromium is missing, timed out or produced nothing; the message says which."""


def find():
    """The Chromium executable on PATH, or None."""
    return next((p for p in map(shutil.which, NAMES) if p), None)


def _run(args, timeout=TIMEOUT_S):
    """Chromium's stdout for ``args``; its process group never outlives the call."""
    exe = find()
    if not exe:
        raise BrowserError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as tmp:
        out_path = os.path.join(tmp, "stdout")
        with open(out_path, "wb") as out:
            proc = processes.spawn([exe, *FLAGS, f"--user-data-dir={os.path.join(tmp, 'profile')}",
                                    f"--window-size={WINDOW[0]},{WINDOW[1]}", *args],
                                   os.path.join(tmp, "stderr"), stdout=out)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"chromium did not finish within {timeout:.0f} s") from None
        finally:
            processes.kill_group(proc, grace=1.0)
        with open(out_path, errors="replace") as f:
            return f.read()


def checks(html_path):
    """The ``data-*`` attributes report.html's check script set on <body>, once loaded."""
    dom = _run(["--dump-dom", f"file://{os.path.abspath(html_path)}"])
    body = re.search(r"<body([^>]*)>", dom)
    if not body:
        raise BrowserError("chromium returned no DOM")
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)))


def screenshot(html_path, png_path):
    """Save the first screen (1280 × 800) of ``html_path`` as ``png_path`` (atomically)."""
    tmp = f"{png_path}.part.png"
    _run([f"--screenshot={os.path.abspath(tmp)}", f"file://{os.path.abspath(html_path)}"])
    if not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
        raise BrowserError("chromium wrote no screenshot")
    os.replace(tmp, png_path)
    return png_path
