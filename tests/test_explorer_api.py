"""The explorer's HTTP API on a loopback port: every endpoint, and every bad input gets a 4xx."""

from __future__ import annotations

import http.client
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from vae_jax.errors import CheckpointNotFoundError, WorkdirError
from vae_jax.explorer.server import make_explorer, serve
from vae_jax.inference import open_run

LATENT = 10


@pytest.fixture(scope="module")
def server(smoke_vae):
  explorer = make_explorer(smoke_vae[0])
  server = serve(explorer, port=0)
  server.serve_in_thread()
  yield server
  server.shutdown()
  server.server_close()


def request(server, method: str, path: str, body=None, headers=None):
  """(status, content type, body bytes) of one request on a fresh connection."""
  connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
  if isinstance(body, dict | list):
    body = json.dumps(body).encode()
  connection.request(method, path, body=body, headers=headers or {})
  response = connection.getresponse()
  out = response.status, response.getheader("Content-Type"), response.read()
  connection.close()
  return out


def png_array(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)))


def error_of(server, method, path, body=None, headers=None, status=400) -> str:
  got, kind, data = request(server, method, path, body, headers)
  assert got == status, (got, data[:300])
  assert kind == "application/json"
  return json.loads(data)["error"]


def face_png(size=(40, 52), mode="RGB") -> bytes:
  rng = np.random.default_rng(0)
  shape = size + ((3,) if mode == "RGB" else ())
  out = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(out, format="PNG")
  return out.getvalue()


def test_meta_describes_the_run(server):
  status, kind, data = request(server, "GET", "/api/meta")
  meta = json.loads(data)
  assert status == 200 and kind == "application/json"
  assert meta["latent_dim"] == LATENT and meta["image_shape"] == [30, 30, 1]
  assert len(meta["kl_per_dim"]) == LATENT and meta["gallery_size"] == 12
  assert len(set(meta["plane_dims"])) == 2 and meta["samplers"] == ["gmm", "prior"]


def test_the_page_and_its_files_are_served(server):
  for path, kind in (
    ("/", "text/html"),
    ("/app.js", "text/javascript"),
    ("/style.css", "text/css"),
  ):
    status, got, data = request(server, "GET", path)
    assert status == 200 and got.startswith(kind) and len(data) > 500
  assert b'src="app.js"' in request(server, "GET", "/")[2]


def test_decode_gives_the_runs_own_images(server, smoke_vae):
  run = open_run(smoke_vae[0])
  codes = np.random.default_rng(1).standard_normal((3, LATENT)).round(3)
  status, kind, data = request(
    server, "POST", "/api/decode", {"codes": codes.tolist(), "format": "npy"}
  )
  assert status == 200 and kind == "application/octet-stream"
  np.testing.assert_array_equal(np.load(io.BytesIO(data)), run.decode(codes))
  status, kind, data = request(server, "POST", "/api/decode", {"codes": codes[:1].tolist()})
  assert status == 200 and kind == "image/png"
  np.testing.assert_array_equal(png_array(data), run.decode(codes[:1])[0, ..., 0])
  grid = png_array(request(server, "POST", "/api/decode", {"codes": codes.tolist(), "cols": 2})[2])
  assert grid.shape[:2] == (2 * 30 + 3, 2 * 30 + 3)  # 2×2 tiles, one-pixel borders


def test_encode_an_upload_through_the_runs_preprocessing(server, smoke_vae):
  run = open_run(smoke_vae[0])
  upload = face_png()
  status, _, data = request(server, "POST", "/api/encode", upload)
  out = json.loads(data)
  assert status == 200 and len(out["code"]) == len(out["logvar"]) == LATENT
  x = run.preprocess(np.asarray(Image.open(io.BytesIO(upload))))[None]
  np.testing.assert_allclose(out["code"], run.encode(x)[0][0], atol=1e-4)
  assert out["input"].startswith("data:image/png;base64,")
  assert out["reconstruction"].startswith("data:image/png;base64,")


def test_gallery_sample_and_strips(server):
  page = json.loads(request(server, "GET", "/api/gallery?start=10&count=5")[2])
  assert page["total"] == 12 and [i["index"] for i in page["items"]] == [10, 11]
  item = json.loads(request(server, "GET", "/api/gallery/3")[2])
  assert item["index"] == 3 and len(item["code"]) == LATENT
  draw = json.loads(request(server, "POST", "/api/sample", {"seed": 4, "temperature": 0.5})[2])
  again = json.loads(request(server, "POST", "/api/sample", {"seed": 4, "temperature": 0.5})[2])
  assert draw == again and len(draw["code"]) == LATENT
  prior = {"sampler": "prior", "seed": 4, "temperature": 0.5}
  assert json.loads(request(server, "POST", "/api/sample", prior)[2]) != draw  # gmm by default
  a, b = [0.0] * LATENT, [1.0] * LATENT
  strips = {
    "interp": ({"kind": "interp", "a": a, "b": b}, (30, 9 * 31 + 1)),
    "traverse": ({"kind": "traverse", "code": a, "dim": 2}, (30, 11 * 31 + 1)),
    "plane": ({"kind": "plane", "code": a, "dims": [0, 1]}, (8 * 31 + 1, 8 * 31 + 1)),
  }
  for body, (height, width) in strips.values():
    status, kind, data = request(server, "POST", "/api/strip", body)
    assert status == 200 and kind == "image/png"
    picture = png_array(data)
    assert picture.shape[1] == width and picture.shape[0] in (height, height + 2)


BAD_JSON = [
  ("/api/decode", b"{not json", "not JSON"),
  ("/api/decode", b"[1, 2]", "JSON object"),
  ("/api/decode", {"codes": []}, "non-empty list"),
  ("/api/decode", {"codes": [[0.0] * 3]}, "list of 10 numbers"),
  ("/api/decode", {"codes": [[1e30] + [0.0] * 9]}, r"must be in \[-50, 50\]"),
  ("/api/decode", b'{"codes": [[NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}', "finite number"),
  ("/api/decode", {"codes": [["a"] * 10]}, "finite number"),
  ("/api/decode", {"codes": [[0.0] * 10] * 257}, "at most 256 codes"),
  ("/api/decode", {"codes": [[0.0] * 10], "format": "gif"}, "format"),
  ("/api/decode", {"codes": [[0.0] * 10], "cols": -3}, "cols"),
  ("/api/decode", {"codes": [[0.0] * 10], "colorize": True}, "--colorizer"),
  ("/api/strip", {"kind": "traverse", "code": [0.0] * 10, "dim": 10}, r"dim must be .*\[0, 9\]"),
  ("/api/strip", {"kind": "traverse", "code": [0.0] * 10, "dim": -1}, "dim"),
  ("/api/strip", {"kind": "plane", "code": [0.0] * 10, "dims": [0]}, "two latent dimensions"),
  ("/api/strip", {"kind": "interp", "a": [0.0] * 10, "b": [0.0] * 10, "points": 10**9}, "points"),
  ("/api/strip", {"kind": "mosaic"}, "kind"),
  ("/api/sample", {"sampler": "vamp"}, "sampler"),
  ("/api/sample", {"temperature": -1}, "temperature"),
  ("/api/sample", {"seed": -5}, "seed"),
]


@pytest.mark.parametrize("path, body, message", BAD_JSON)
def test_a_bad_request_is_a_400_with_a_message(server, path, body, message):
  import re

  error = error_of(server, "POST", path, body)
  assert re.search(message, error), error


@pytest.mark.parametrize(
  "path",
  ["/api/gallery?start=-1", "/api/gallery?count=100000", "/api/gallery/99", "/api/gallery/x"],
)
def test_bad_gallery_requests_are_400s(server, path):
  error_of(server, "GET", path)


def _bomb() -> bytes:
  out = io.BytesIO()
  Image.new("1", (20000, 20000)).save(out, format="PNG")  # 400 Mpixel, a few kB on disk
  return out.getvalue()


@pytest.mark.parametrize(
  "upload, message",
  [
    (b"", "empty file"),
    (b"just some text, not an image", "not an image"),
    (face_png()[:200], "cannot be used"),
    (_bomb(), "too many pixels|decompression"),
  ],
  ids=["empty", "text", "truncated", "decompression bomb"],
)
def test_a_bad_upload_is_a_400_and_the_server_keeps_serving(server, upload, message):
  import re

  error = error_of(server, "POST", "/api/encode", upload)
  assert re.search(message, error), error
  assert request(server, "GET", "/api/meta")[0] == 200


def test_oversized_and_lengthless_bodies_are_refused_unread(server):
  huge = {"Content-Length": str(21 << 20)}
  error_of(server, "POST", "/api/encode", headers=huge, status=413)
  error_of(server, "POST", "/api/decode", headers={"Content-Length": str(2 << 20)}, status=413)
  connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
  connection.putrequest("POST", "/api/decode")
  connection.endheaders()
  assert connection.getresponse().status == 411
  connection.close()


@pytest.mark.parametrize(
  "path",
  [
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/static/../../pyproject.toml",
    "/..%2f..%2fREADME.md",
    "/app.js/../../../etc/passwd",
    "/nope",
  ],
)
def test_nothing_outside_the_page_is_served(server, path):
  error_of(server, "GET", path, status=404)


def test_unknown_api_is_404(server):
  error_of(server, "POST", "/api/nothing", {}, status=404)


def test_a_workdir_without_checkpoint_or_the_wrong_colorizer_fails_at_start(smoke_vae, tmp_path):
  (tmp_path / "config.json").write_text((smoke_vae[0] / "config.json").read_text())
  with pytest.raises(CheckpointNotFoundError, match="train first"):
    make_explorer(tmp_path)
  with pytest.raises(WorkdirError, match="not a colouriser"):
    make_explorer(smoke_vae[0], colorizer=str(smoke_vae[0]))


def test_listening_beyond_loopback_warns(server, caplog):
  with caplog.at_level(logging.WARNING, logger="vae_jax"):
    other = serve(server.explorer, host="0.0.0.0", port=0)
  other.server_close()
  assert "anyone who can reach port" in caplog.text
