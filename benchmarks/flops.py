"""FLOPs of a JAX function (XLA's cost analysis), the measured matmul peak, the machine's name.

Used by the speed benchmarks to say how much of the hardware a train step
uses: ``GFLOP/s = flops per step × steps per second``, and the fraction of
what XLA's own large matmul reaches on the same device.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

# CPU features that decide which kernels XLA and PyTorch pick: AMX runs bf16 matmuls several times
# faster than AVX-512's bf16 dot products. "2-core CPU" machines here have been both Intel with AMX
# and AMD without.
_CPU_FEATURES = ("avx512f", "avx512_bf16", "amx_bf16")


def device_name() -> str:
  """The default device in words: on a CPU its model, core count and matmul-relevant features.

  The project's "2-core CPU" machines have been Intel (with AMX) and AMD
  (without), and the same benchmark's figures differ between them by tens
  of percent (BENCHMARKS.md), so each benchmark says which it measured.
  """
  if jax.default_backend() != "cpu":
    return jax.devices()[0].device_kind
  model, flags = "unknown CPU", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
  except OSError:  # not Linux
    pass
  features = " ".join(f for f in _CPU_FEATURES if f in flags) or "no AVX-512"
  return f"{model}, {os.cpu_count()} cores, {features}"


def step_flops(fn: Callable, *args) -> float:
  """Floating-point operations XLA counts for one call of ``jax.jit(fn)(*args)`` (or NaN).

  Counted on the program as traced, lowered for the CPU whatever the default
  device, so every device gets the same count: on a GPU the lowered program
  has no cost analysis (jax 0.11) and the compiled one leaves out its
  cuBLAS and cuDNN calls (0.22 of the galaxy step's 0.63 GFLOP per image on
  an H100). On the CPU this and the compiled program's count agree within
  2 %. ``fn`` may already be jitted; nothing runs, so donated arguments stay
  alive. A loop's body (``lax.scan``) is counted once, whatever its trip count.
  """
  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args)
  cost = jitted.lower(*specs).cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def matmul_peak_gflops(n: int | None = None, repeats: int = 7, dtype=jnp.float32) -> float:
  """Median GFLOP/s of an n×n by n×n ``jnp.dot`` on the default device (2n³ FLOPs per product).

  ``n`` defaults to 2048 on a CPU and 8192 on an accelerator, which 2048² would not fill.

  Products of ``dtype`` inputs return float32, as mixed precision uses bf16
  matmuls (XLA's CPU bf16 dot with a bf16 result is several times slower).
  Each repeat chains a few products inside one jitted call so dispatch
  overhead is negligible; the median damps a machine shared with other work.
  """
  n = n or (2048 if jax.default_backend() == "cpu" else 8192)
  chain = 4

  @jax.jit
  def products(a, b):
    for _ in range(chain):  # rescaled so values stay finite across the chain
      a = (jnp.dot(a, b, preferred_element_type=jnp.float32) * (1.0 / n)).astype(dtype)
    return a

  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  products(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    products(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return chain * 2 * n**3 / statistics.median(times) / 1e9
