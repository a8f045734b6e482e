"""The explorer's local web server: the page, and a small JSON/PNG API (``bin/explore.py``).

The standard library's threading HTTP server is enough for one person's
browser and a script or two: each request runs in its own thread, and the
compiled JAX functions are shared by all of them. Static files are read
once at start from this package, and served by name only, so no request
path can reach anything else on disk.

API (JSON bodies in and out unless said; every error is a 4xx with
``{"error": message}``):

* ``GET /api/meta``: the run (latent size, image shape, KL per dimension, …).
* ``GET /api/gallery?start=0&count=24``: thumbnails of the gallery images.
* ``GET /api/gallery/<i>``: gallery image ``i`` and its code (posterior mean).
* ``POST /api/decode`` ``{"codes": [[…], …], "cols": 9, "colorize": false,
  "format": "png" | "npy"}``: the decoded codes as one PNG (a row, or
  ``cols`` per row) or a ``.npy`` of uint8 N×H×W×C.
* ``POST /api/encode`` (the body is an image file, ≤ 20 MB): its code,
  preprocessed input and reconstruction.
* ``POST /api/sample`` ``{"sampler": "gmm", "temperature": 1.0, "seed": 0}``: a code
  (``sampler``: one of the run's ``samplers``, the first by default).
* ``POST /api/strip`` ``{"kind": "interp", "a": […], "b": […], "spherical": false}``,
  ``{"kind": "traverse", "code": […], "dim": 3}`` or ``{"kind": "plane",
  "code": […], "dims": [i, j]}``: a PNG strip (or the plane's grid).
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import urllib.parse
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from vae_jax import samplers, sampling
from vae_jax.data.dataset import load_images, run_images
from vae_jax.errors import ConfigError, DataError
from vae_jax.explorer.app import (
  MAX_UPLOAD_BYTES,
  PLANE_SIDE,
  STRIP_POINTS,
  BadRequest,
  Explorer,
)
from vae_jax.inference import open_colorizer, open_run

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 1 << 20
_STATIC = {  # URL path → (file in vae_jax/explorer/static, content type)
  "/": ("index.html", "text/html; charset=utf-8"),
  "/app.js": ("app.js", "text/javascript; charset=utf-8"),
  "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def static_files() -> dict[str, tuple[bytes, str]]:
  folder = resources.files("vae_jax.explorer") / "static"
  return {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in _STATIC.items()}


class Handler(BaseHTTPRequestHandler):
  """One request; ``server.explorer`` and ``server.static`` are shared by all."""

  protocol_version = "HTTP/1.1"  # keep-alive: a dragging slider reuses one connection
  # Headers and body leave in two writes: with Nagle's algorithm the body would wait for the
  # client's delayed acknowledgement of the headers, ~40 ms on every request.
  disable_nagle_algorithm = True
  server: ExplorerServer

  def log_message(self, format: str, *args) -> None:
    log.debug("%s " + format, self.address_string(), *args)

  def _send(self, status: int, body: bytes, kind: str) -> None:
    self.send_response(status)
    self.send_header("Content-Type", kind)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    self.end_headers()
    self.wfile.write(body)

  def _json(self, value: dict, status: int = HTTPStatus.OK) -> None:
    self._send(status, json.dumps(value).encode(), "application/json")

  def _error(self, status: int, message: str) -> None:
    self._json({"error": message}, status)

  def _body(self, limit: int) -> bytes:
    length = self.headers.get("Content-Length")
    if length is None or not length.isdigit():
      raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "The request needs a Content-Length.")
    if int(length) > limit:
      self.close_connection = True  # the unread body must not be taken for the next request
      raise _HttpError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"The body is over the limit of {limit >> 20 or 1} MB."
      )
    return self.rfile.read(int(length))

  def _json_body(self) -> dict:
    try:
      value = json.loads(self._body(MAX_JSON_BYTES) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise BadRequest(f"The body is not JSON: {error}.") from None
    if not isinstance(value, dict):
      raise BadRequest("The body must be a JSON object.")
    return value

  def _handle(self, route) -> None:
    try:
      route()
    except _HttpError as error:
      self._error(error.status, str(error))
    except BadRequest as error:
      self._error(HTTPStatus.BAD_REQUEST, str(error))
    except Exception:  # a bug: say so, keep serving
      log.error("%s %s failed:\n%s", self.command, self.path, traceback.format_exc())
      self._error(
        HTTPStatus.INTERNAL_SERVER_ERROR, "The explorer failed on this request (see its log)."
      )

  def do_GET(self) -> None:
    self._handle(self._get)

  def do_POST(self) -> None:
    self._handle(self._post)

  def _get(self) -> None:
    url = urllib.parse.urlsplit(self.path)
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
    explorer = self.server.explorer
    if url.path in self.server.static:
      body, kind = self.server.static[url.path]
      self._send(HTTPStatus.OK, body, kind)
    elif url.path == "/favicon.ico":
      self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
    elif url.path == "/api/meta":
      self._json(explorer.meta())
    elif url.path == "/api/gallery":
      self._json(
        explorer.gallery_page(_integer(query.get("start", "0")), _integer(query.get("count", "24")))
      )
    elif url.path.startswith("/api/gallery/"):
      self._json(explorer.gallery_item(_integer(url.path.rsplit("/", 1)[1])))
    else:
      raise _HttpError(HTTPStatus.NOT_FOUND, f"No such page: {url.path}")

  def _post(self) -> None:
    explorer, path = self.server.explorer, urllib.parse.urlsplit(self.path).path
    if path == "/api/encode":
      colorize = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("colorize")
      self._json(explorer.encode_upload(self._body(MAX_UPLOAD_BYTES), colorize == ["1"]))
      return
    if path not in ("/api/decode", "/api/sample", "/api/strip"):
      raise _HttpError(HTTPStatus.NOT_FOUND, f"No such API: {path}")
    request = self._json_body()
    colorize = bool(request.get("colorize", False))
    if path == "/api/sample":
      self._json(
        explorer.sample(
          request.get("sampler", explorer.run.samplers[0]),
          request.get("temperature", 1.0),
          request.get("seed", 0),
        )
      )
    elif path == "/api/decode":
      codes = explorer.codes(request.get("codes"))
      form = request.get("format", "png")
      if form == "npy":
        self._send(HTTPStatus.OK, explorer.decode_npy(codes, colorize), "application/octet-stream")
      elif form == "png":
        self._send(
          HTTPStatus.OK, explorer.decode_png(codes, request.get("cols"), colorize), "image/png"
        )
      else:
        raise BadRequest(f"format must be 'png' or 'npy'; got {form!r}.")
    else:
      kind = request.get("kind")
      if kind == "interp":
        codes = explorer.path_codes(
          request.get("a"),
          request.get("b"),
          request.get("spherical", False),
          request.get("points", STRIP_POINTS),
        )
        cols = None
      elif kind == "traverse":
        codes = explorer.traverse_codes(
          request.get("code"), request.get("dim"), request.get("points", sampling.TRAVERSE_STEPS)
        )
        cols = None
      elif kind == "plane":
        side = request.get("side", PLANE_SIDE)
        codes = explorer.plane_codes(request.get("code"), request.get("dims"), side)
        cols = side
      else:
        raise BadRequest(f"kind must be 'interp', 'traverse' or 'plane'; got {kind!r}.")
      self._send(HTTPStatus.OK, explorer.decode_png(codes, cols, colorize), "image/png")


class _HttpError(Exception):
  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def _integer(text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise BadRequest(f"{text!r} is not a whole number.") from None


class ExplorerServer(ThreadingHTTPServer):
  """The HTTP server with the explorer it serves."""

  daemon_threads = True

  def __init__(self, address: tuple[str, int], explorer: Explorer):
    super().__init__(address, Handler)
    self.explorer = explorer
    self.static = static_files()

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

  def serve_in_thread(self) -> threading.Thread:
    thread = threading.Thread(target=self.serve_forever, name="explorer", daemon=True)
    thread.start()
    return thread


def make_explorer(
  workdir: str | Path, colorizer: str | None = None, data: str | None = None, max_images: int = 512
) -> Explorer:
  """Open the run (and colouriser), load the gallery, compile what the page uses."""
  run = open_run(workdir)
  try:
    sampling.prepare_sampler(run, samplers.SAMPLERS[0])
  except DataError as error:  # the training images are gone: the prior is still there
    log.warning("No gmm sampler (%s); the random button draws from the prior.", error)
  subset, preprocess = run_images(run.config, data, "val")
  gallery = load_images(subset, preprocess, max_images, desc="gallery")
  explorer = Explorer(
    run,
    gallery,
    data or f"{run.config.data.source} (held out)",
    open_colorizer(colorizer) if colorizer else None,
  )
  explorer.warm_up()
  return explorer


def serve(
  explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = False
) -> ExplorerServer:
  """A server of ``explorer`` listening on ``host:port``; call its ``serve_forever()``.

  (Or ``serve_in_thread()``, as tests do; ``shutdown()`` stops either.)
  """
  if host not in ("127.0.0.1", "localhost", "::1"):
    log.warning("Serving on %s: anyone who can reach port %d can use this explorer.", host, port)
  try:
    server = ExplorerServer((host, port), explorer)
  except OSError as error:
    raise ConfigError(
      f"Cannot listen on {host}:{port} ({error.strerror}); choose another --port."
    ) from None
  if open_browser:
    webbrowser.open(server.url)
  return server
