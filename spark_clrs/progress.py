"""Search progress: a live one-line bar on a terminal, plain log lines elsewhere.

On a TTY the bar (iteration, best so far, valid rate, ETA) is redrawn in
place and messages scroll above it. In a notebook, a pipe or a log file
every message is one plain line that repeats the same figures. No dependency
beyond the standard library.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


class Progress:
  """Progress of ``total`` iterations, of which ``start`` were done before this invocation."""

  def __init__(self, total: int, *, start: int = 0, mode: str = "auto",
               stream: TextIO | None = None, width: int = 24):
    self._stream = stream or sys.stderr
    if mode == "auto":
      isatty = getattr(self._stream, "isatty", lambda: False)
      mode = "bar" if isatty() else "log"
    self.mode = mode
    self.total = total
    self.done = start
    self._start_done = start
    self._t0 = time.monotonic()
    self._width = width
    self.best: float | None = None
    self.valid_rate: float | None = None
    self._bar_shown = False

  def status(self) -> str:
    """'12/100 | best 0.6543 | valid 83% | ETA 4m10s' for the current state."""
    parts = [f"{self.done}/{self.total}"]
    parts.append(f"best {self.best:.4f}" if self.best is not None else "best -")
    parts.append(f"valid {self.valid_rate:.0%}" if self.valid_rate is not None else "valid -")
    parts.append(f"ETA {self.eta()}")
    return " | ".join(parts)

  def eta(self) -> str:
    finished_here = self.done - self._start_done
    remaining = self.total - self.done
    if remaining <= 0:
      return "0s"
    if finished_here <= 0:
      return "?"
    return format_seconds((time.monotonic() - self._t0) / finished_here * remaining)

  def update(self, done: int, *, best: float | None, valid_rate: float | None) -> None:
    self.done, self.best, self.valid_rate = done, best, valid_rate
    if self.mode == "bar":
      self._draw()

  def message(self, line: str) -> None:
    """Prints one message (above the bar on a TTY, with the status in log mode)."""
    if self.mode == "none":
      return
    if self.mode == "bar":
      self._stream.write("\r\x1b[K" + line + "\n")
      self._draw()
    else:
      self._stream.write(f"{line}  [{self.status()}]\n")
    self._stream.flush()

  def _draw(self) -> None:
    fraction = min(1.0, self.done / self.total) if self.total else 1.0
    filled = int(round(fraction * self._width))
    bar = "#" * filled + "." * (self._width - filled)
    self._stream.write(f"\r\x1b[K[{bar}] {self.status()}")
    self._stream.flush()
    self._bar_shown = True

  def close(self) -> None:
    if self.mode == "bar" and self._bar_shown:
      self._stream.write("\n")
      self._stream.flush()
      self._bar_shown = False
