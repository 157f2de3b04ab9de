"""Result tables: mean ± std statistics, Markdown tables and JSON files.

compare, transfer and report all print the same kind of table (one row per
strategy, task or run, cells as "mean ± std") and save it twice: as Markdown
for people and as JSON for programs. Keeping the statistics and the
formatting here makes the three agree on what "mean ± std" means (population
std over the runs or seeds that have a value; ``None`` when none has) and on
how a missing number is shown.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

from spark_clrs.search.rundir import write_atomic

MISSING = "-"


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean, population std, min and max of the finite values among ``n`` inputs."""

  mean: float | None
  std: float | None
  min: float | None
  max: float | None
  n: int

  @classmethod
  def of(cls, values: Iterable[Any]) -> Stat:
    """Statistics of the finite numbers in ``values`` (None, NaN and Inf are skipped)."""
    xs = [float(v) for v in values
          if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
      return cls(None, None, None, None, 0)
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    return cls(mean, std, min(xs), max(xs), len(xs))

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def format(self, digits: int = 4, *, percent: bool = False, integer: bool = False) -> str:
    """'0.6543 ± 0.0120' (one value: no ±), '-' without values."""
    if self.mean is None:
      return MISSING

    def one(x: float) -> str:
      if percent:
        return f"{100.0 * x:.1f}%"
      if integer:
        return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:,.1f}"
      return f"{x:.{digits}f}"

    if self.n == 1:
      return one(self.mean)
    return f"{one(self.mean)} ± {one(self.std)}"


def format_stat(stat: Stat, kind: str) -> str:
  """A table cell by column kind: ``acc`` (4 decimals), ``rate`` (%), ``int``, ``usd``."""
  if kind == "rate":
    return stat.format(percent=True)
  if kind == "int":
    return stat.format(integer=True)
  if kind == "usd":
    return stat.format(digits=4)
  return stat.format()


def fmt(value: Any, digits: int = 4) -> str:
  """One cell: floats with ``digits`` decimals, ints with separators, None as '-'."""
  if value is None:
    return MISSING
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, int):
    return f"{value:,}"
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.{digits}f}"
  return str(value)


def fmt_rate(value: float | None) -> str:
  return MISSING if value is None else f"{100.0 * value:.1f}%"


def _cell(text: Any) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table (cells are already formatted strings)."""
  lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  for row in rows:
    if len(row) != len(headers):
      raise ValueError(f"a table row has {len(row)} cells for {len(headers)} columns")
    lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
  return "\n".join(lines) + "\n"


def to_json_text(data: Any) -> str:
  """Indented, key-sorted JSON (NaN written as null)."""
  return json.dumps(_finite(data), indent=2, sort_keys=True, default=str) + "\n"


def _finite(data: Any) -> Any:
  if isinstance(data, float) and not math.isfinite(data):
    return None
  if isinstance(data, dict):
    return {k: _finite(v) for k, v in data.items()}
  if isinstance(data, (list, tuple)):
    return [_finite(v) for v in data]
  return data


def write_json(path: str | pathlib.Path, data: Any) -> pathlib.Path:
  """Writes ``data`` as JSON atomically (readers never see half a file)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, to_json_text(data))
  return path


def write_text(path: str | pathlib.Path, text: str) -> pathlib.Path:
  """Writes text atomically."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, text)
  return path


__all__ = ["MISSING", "Stat", "fmt", "fmt_rate", "format_stat", "markdown_table", "to_json_text",
           "write_json", "write_text"]
