#!/usr/bin/env python
"""The explorer's latency over real HTTP, as the page sees it, and a bounded local load test.

For each run it starts ``bin/explore.py`` in a fresh process and reports:
  start            seconds from the command to the first decoded image (compilation included)
  one image        round trip of ``POST /api/decode`` for one code (p50, p95)
  7-image strip    the same for 7 codes
  encode upload    ``POST /api/encode`` of a 96×96 JPEG (424×424 for galaxies, cropped to 256)
  load             8 concurrent clients, 2000 requests in all (decode one code): errors,
                   requests/s, the server's resident memory before and after
Targets (issue 24): one faces image p50 ≤ 15 ms, p95 ≤ 30 ms; one galaxy p50 ≤ 80 ms,
p95 ≤ 150 ms; start to first image ≤ 6 s for the faces configs.

  python benchmarks/explore_latency.py                      # trains 2-step runs of each config
  python benchmarks/explore_latency.py --workdirs=runs/faces_mlp,runs/galaxy

Ends with one JSON line.
"""

import concurrent.futures
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_WORKDIRS = flags.DEFINE_list(
  "workdirs", [], "Trained runs to measure (default: train 2 steps of each config)."
)
_CONFIGS = flags.DEFINE_list(
  "configs", ["faces_mlp", "faces_conv", "galaxy"], "Configs to train for it."
)
_REPEATS = flags.DEFINE_integer("repeats", 200, "Requests per latency figure.")
_LOAD = flags.DEFINE_integer("load_requests", 2000, "Requests of the load test.")
_CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent clients of the load test.")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train_tiny(config: str, folder: Path) -> Path:
  """Two steps of ``configs/<config>.py`` (the full model): a run with the real architecture."""
  workdir = folder / config
  overrides = [f"--config.train.{k}=2" for k in ("steps", "log_every", "eval_every", "ckpt_every")]
  if config == "faces_conv":
    overrides.append("--config.train.steps_per_dispatch=1")
  cmd = [sys.executable, str(ROOT / "bin" / "train.py"), f"--config={ROOT / 'configs' / config}.py"]
  subprocess.run([*cmd, f"--workdir={workdir}", *overrides], check=True, capture_output=True)
  return workdir


class Client:
  """One keep-alive connection, as a browser tab holds."""

  def __init__(self, port: int):
    self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

  def post(self, path: str, body: bytes, kind: str = "application/json") -> tuple[int, bytes]:
    self.connection.request("POST", path, body=body, headers={"Content-Type": kind})
    response = self.connection.getresponse()
    return response.status, response.read()

  def get(self, path: str) -> tuple[int, bytes]:
    self.connection.request("GET", path)
    response = self.connection.getresponse()
    return response.status, response.read()


def timed(fn, repeats: int) -> dict:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    status, _ = fn()
    times.append(1000 * (time.perf_counter() - start))
    assert status == 200, status
  return {
    "p50_ms": round(statistics.median(times), 2),
    "p95_ms": round(float(np.percentile(times, 95)), 2),
  }


def rss_mb(pid: int) -> float:
  for line in Path(f"/proc/{pid}/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) / 1024
  return float("nan")


def measure(workdir: Path) -> dict:
  port = free_port()
  start = time.perf_counter()
  server = subprocess.Popen(
    [sys.executable, str(ROOT / "bin" / "explore.py"), f"--workdir={workdir}", f"--port={port}"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
  )
  try:
    code = None
    while code is None:
      try:
        client = Client(port)
        status, data = client.get("/api/meta")
        meta = json.loads(data)
        code = [0.0] * meta["latent_dim"]
        status, _ = client.post("/api/decode", json.dumps({"codes": [code]}).encode())
        assert status == 200
      except (ConnectionError, OSError):
        if server.poll() is not None:
          raise RuntimeError(server.stderr.read().decode()[-2000:]) from None
        time.sleep(0.05)
    start_s = time.perf_counter() - start
    rng = np.random.default_rng(0)

    def one():
      return client.post(
        "/api/decode",
        json.dumps({"codes": [rng.standard_normal(len(code)).round(3).tolist()]}).encode(),
      )

    def strip():
      codes = rng.standard_normal((7, len(code))).round(3).tolist()
      return client.post("/api/decode", json.dumps({"codes": codes}).encode())

    jpeg = io.BytesIO()  # a 96×96 face; Galaxy Zoo's 424×424 for a galaxy run (crop 256)
    side = 96 if meta["image_shape"][0] <= 96 else 424
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(jpeg, format="JPEG")

    def encode():
      return client.post("/api/encode", jpeg.getvalue(), "image/jpeg")

    result = {
      "image_shape": meta["image_shape"],
      "start_to_first_image_s": round(start_s, 2),
      "one_image": timed(one, _REPEATS.value),
      "strip_7": timed(strip, _REPEATS.value // 2),
      f"encode_{side}px_jpeg": timed(encode, _REPEATS.value // 2),
    }
    rss_before = rss_mb(server.pid)
    per_client = _LOAD.value // _CLIENTS.value

    def load(_):
      c, errors = Client(port), 0
      for _ in range(per_client):
        status, _ = c.post("/api/decode", json.dumps({"codes": [code]}).encode())
        errors += status != 200
      return errors

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(_CLIENTS.value) as pool:
      errors = sum(pool.map(load, range(_CLIENTS.value)))
    seconds = time.perf_counter() - t0
    result["load"] = {
      "clients": _CLIENTS.value,
      "requests": per_client * _CLIENTS.value,
      "errors": errors,
      "requests_per_s": round(per_client * _CLIENTS.value / seconds, 1),
      "rss_mb_before": round(rss_before, 1),
      "rss_mb_after": round(rss_mb(server.pid), 1),
    }
    return result
  finally:
    server.terminate()
    server.wait()


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    workdirs = [Path(w) for w in _WORKDIRS.value] or [
      train_tiny(config, Path(tmp)) for config in _CONFIGS.value
    ]
    results = {}
    for workdir in workdirs:
      results[workdir.name] = r = measure(workdir)
      print(
        f"{workdir.name:12s} {r['image_shape']!s:14s} start {r['start_to_first_image_s']:5.2f} s  "
        f"one image p50 {r['one_image']['p50_ms']:6.1f} p95 {r['one_image']['p95_ms']:6.1f} ms  "
        f"7-strip p50 {r['strip_7']['p50_ms']:6.1f} ms  "
        f"encode p50 {next(v for k, v in r.items() if k.startswith('encode'))['p50_ms']:6.1f} ms  "
        f"load: {r['load']['errors']} errors, {r['load']['requests_per_s']} req/s, RSS "
        f"{r['load']['rss_mb_before']} → {r['load']['rss_mb_after']} MB",
        flush=True,
      )
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
