"""What became of a source's items: how many are used, which were skipped and why.

Crawled folders always hold a few broken files. A run skips them instead of
dying on them, and says so twice: one summary line in the log, and every
skipped item with its reason in ``<workdir>/data_report.json``, so that
"nothing lost" can be checked rather than trusted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from vae_jax import files
from vae_jax.errors import DataError

REPORT_FILENAME = "data_report.json"


class NoUsableImagesError(DataError):
  """Every item of the configured source was skipped."""


@dataclasses.dataclass
class DataReport:
  """The outcome of checking a source against the preprocessing settings.

  Attributes:
    source: the config's source string.
    items: items the source offered (files found, records, array rows),
      plus the folders that could not be entered.
    used: items that train (before the train/validation split).
    skipped: ``(item, reason)`` for everything left out, folders included.
    cache: the decode cache the images are read from, if any.
  """

  source: str
  items: int
  used: int
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  cache: str | None = None

  def summary(self, report_path: Path | None = None) -> str:
    line = f"data: {self.used} of {self.items} images usable from {self.source}"
    if self.skipped:
      where = f" (listed in {report_path})" if report_path else ""
      line += (
        f"; {len(self.skipped)} skipped{where}, e.g. {self.skipped[0][0]}: {self.skipped[0][1]}"
      )
    if self.cache:
      line += f"; decoded images cached in {self.cache}"
    return line

  def write(self, workdir: str | Path) -> Path:
    path = Path(workdir) / REPORT_FILENAME
    record = dataclasses.asdict(self)
    record["skipped"] = [{"item": item, "reason": reason} for item, reason in self.skipped]
    return files.write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")

  def raise_if_unusable(self, image_size: int, report_path: Path | None = None) -> None:
    """A clear error, before training, when no item survived."""
    if self.used:
      return
    examples = "; ".join(f"{item}: {reason}" for item, reason in self.skipped[:3])
    where = f" Every skipped item is listed in {report_path}." if report_path else ""
    raise NoUsableImagesError(
      f"No usable images in {self.source}: all {self.items} were skipped ({examples}).{where} "
      "Fix or replace the files, or adjust the preprocessing "
      f"(config.data.image_size={image_size}, "
      "crop_size, max_upscale, max_image_pixels)."
    )
