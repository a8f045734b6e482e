"""The explorer's page in a real, headless Chromium (Debian's ``chromium``, driven by Playwright).

Skipped with a one-line reason where either is missing. The screenshot it takes is written to
``$VAE_JAX_SCREENSHOT_DIR`` (default: the test's temporary folder) for a person to look at.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_jax.explorer.server import make_explorer, serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
if CHROMIUM is None:
  pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)

# Chromium's own network traffic (updates, sync) is refused on machines without internet access.
ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
]


@pytest.fixture(scope="module")
def page(smoke_vae):
  server = serve(make_explorer(smoke_vae[0]), port=0)
  server.serve_in_thread()
  with playwright.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    page.wait_for_function("Number(document.getElementById('current').dataset.frames) > 0")
    yield page
    browser.close()
  server.shutdown()
  server.server_close()


def frames(page) -> int:
  return int(page.get_attribute("#current", "data-frames"))


def image_bytes(page, selector: str) -> bytes:
  """The bytes of the image an <img> shows (fetched again from its blob or data URL)."""
  return bytes(
    page.evaluate(
      """async (sel) => {
      const r = await fetch(document.querySelector(sel).src);
      return Array.from(new Uint8Array(await r.arrayBuffer()));
    }""",
      selector,
    )
  )


def test_the_page_has_a_slider_per_dimension(page):
  assert page.locator("#sliders input[type=range]").count() == 10
  assert page.locator("#gallery img").count() == 12  # the smoke run's held-out faces


def test_moving_a_slider_changes_the_image(page):
  before, count = image_bytes(page, "#current"), frames(page)
  page.locator("#sliders input").nth(2).fill("3.5")
  page.wait_for_function(f"Number(document.getElementById('current').dataset.frames) > {count}")
  assert image_bytes(page, "#current") != before
  page.wait_for_function("location.hash.includes('z=') && location.hash.includes('3.5')")


def test_dragging_a_slider_shows_new_images_while_dragging(page):
  """A 2-second scripted drag shows at least 20 new images a second (issue 24's figure)."""
  box = page.locator("#sliders input").nth(4).bounding_box()
  y = box["y"] + box["height"] / 2
  page.mouse.move(box["x"] + 5, y)
  page.mouse.down()
  start, t0 = frames(page), time.perf_counter()
  while time.perf_counter() - t0 < 2.0:
    frac = (time.perf_counter() - t0) / 2.0
    page.mouse.move(box["x"] + 5 + frac * (box["width"] - 10), y)
    page.wait_for_timeout(16)
  page.mouse.up()
  per_second = (frames(page) - start) / (time.perf_counter() - t0)
  print(f"{per_second:.1f} new images per second while dragging")
  assert per_second >= 20


def _face_file(tmp_path: Path) -> Path:
  rng = np.random.default_rng(0)
  path = tmp_path / "face.png"
  Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
  return path


def test_an_uploaded_picture_shows_its_reconstruction(page, tmp_path):
  page.set_input_files("#upload", str(_face_file(tmp_path)))
  page.wait_for_selector("#upload-result:not([hidden])")
  page.wait_for_function("document.getElementById('upload-recon').src.startsWith('data:image/png')")
  recon = Image.open(io.BytesIO(image_bytes(page, "#upload-recon")))
  assert recon.size == (30, 30)
  assert "Encoded face.png" in page.inner_text("#status")


def test_a_broken_upload_shows_an_error_and_the_page_keeps_working(page, tmp_path):
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
  page.set_input_files("#upload", str(broken))
  page.wait_for_selector("#status.error")
  assert "Cannot use broken.png" in page.inner_text("#status")
  count = frames(page)
  page.locator("#sliders input").nth(1).fill("-2")
  page.wait_for_function(f"Number(document.getElementById('current').dataset.frames) > {count}")


def test_interpolation_between_two_gallery_images_and_a_screenshot(page, tmp_path):
  page.locator("#gallery img").nth(2).click()
  page.wait_for_function(
    "document.getElementById('status').textContent.includes('Gallery image 2')"
  )
  page.click("#set-a")
  page.locator("#gallery img").nth(9).click()
  page.wait_for_function(
    "document.getElementById('status').textContent.includes('Gallery image 9')"
  )
  page.click("#set-b")
  page.wait_for_function("Number(document.getElementById('interp').dataset.frames) > 0")
  strip = Image.open(io.BytesIO(image_bytes(page, "#interp")))
  assert strip.size == (9 * 31 + 1, 32)
  folder = Path(os.environ.get("VAE_JAX_SCREENSHOT_DIR", tmp_path))
  folder.mkdir(parents=True, exist_ok=True)
  shot = folder / "explorer.png"
  page.screenshot(path=str(shot), full_page=True)
  print(f"screenshot: {shot}")
  assert shot.stat().st_size > 10_000
