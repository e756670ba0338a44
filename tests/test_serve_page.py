"""The web page of `specrnn serve` in headless Chromium: a real FSDD recording goes in through the microphone path
(Chromium's fake capture device plays the WAV), streams over the WebSocket, and the page must show its digit."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FSDD, ROOT, need
from .serving import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SPEAKERS = ("jackson", "george", "theo")
SCREENSHOT = ROOT / "runs" / "test-artifacts" / "serve-page.png"  # runs/ is ignored by git: look at it, never commit it


def _browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is absent (Debian: apt-get install chromium; .ci/run installs it)")
    return pytest.importorskip("playwright.sync_api", reason="the page test drives Chromium with Playwright "
                                                           "(pip install 'specrnn[test]')")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A streaming digit model on three FSDD speakers (takes 5-49 train; takes 0-4 held out)."""
    _browser()
    need(FSDD)
    root = tmp_path_factory.mktemp("digits")
    with open(root / "m.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for f in sorted(FSDD.glob("*.wav")):
            digit, speaker, take = f.stem.split("_")
            if speaker in SPEAKERS:
                w.writerow([f, digit, "test" if int(take) < 5 else "train"])
    run = root / "run"
    subprocess.run([sys.executable, "-m", "specrnn", "train", str(root / "m.csv"), "--out", str(run), "--max-epochs", "15",
                    "--set", "model.hidden=64", "--set", "data.val_fraction=0.1"], check=True, capture_output=True, timeout=900)
    return run


@pytest.mark.parametrize("clip", ["3_jackson_0.wav", "7_george_1.wav"])
def test_the_page_streams_the_microphone_and_shows_the_digit(digits_run, clip, tmp_path):
    sync_api = _browser()
    wav = FSDD / clip
    flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required", "--no-sandbox"]
    with Server(digits_run) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('about').textContent.includes('classes')")
        page.click("#record")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('recording')", timeout=20000)
        page.wait_for_function("/^[0-9]$/.test(document.getElementById('label').textContent)", timeout=20000)
        page.wait_for_timeout(600)  # about one pass of the clip (the fake device loops it)
        page.click("#stop")
        page.wait_for_function("document.getElementById('label').dataset.final === 'true'", timeout=20000)
        label, status = page.text_content("#label"), page.text_content("#status")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.evaluate("document.getElementById('when').textContent = ''")  # so only the upload's answer can match
        page.set_input_files("#file", str(wav))  # the upload path: POST /predict from the page
        page.wait_for_function("document.getElementById('when').textContent === '(final)' && "
                               "/^[0-9]$/.test(document.getElementById('label').textContent)", timeout=20000)
        uploaded = page.text_content("#label")
        browser.close()
    assert status.startswith("done:"), status
    assert label == clip[0], f"the page showed {label!r} for {clip} ({status})"
    assert uploaded == clip[0], f"the page showed {uploaded!r} for the uploaded {clip}"
