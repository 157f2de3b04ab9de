"""Search progress through tqdm: a live bar on a terminal, a widget in a notebook, lines in a log.

The bar (proposals done, best so far, valid rate, rate and ETA) is tqdm's, so it
redraws in place on a terminal, becomes an ipywidgets bar in Jupyter (``tqdm.auto``;
without ipywidgets it falls back to plain lines) and never writes carriage returns
into a pipe or log file: there every message is one plain line that repeats the
same figures, ``proposal 3: ...  [3/10 | best 0.5000 | valid 75% | ETA 4m10s]``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any, TextIO

MODES = ("auto", "bar", "notebook", "log", "none")


def format_seconds(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


def in_notebook() -> bool:
  """Whether this process is a Jupyter kernel (where tqdm.auto draws a widget)."""
  shell = sys.modules.get("IPython")
  if shell is None:
    return False
  try:
    ip = shell.get_ipython()
  except AttributeError:
    return False
  return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Progress:
  """Progress of ``total`` iterations, of which ``start`` were done before this invocation.

  Args:
    total: the run's iterations.
    start: iterations finished by earlier invocations (a resumed run).
    mode: ``auto`` (``notebook`` in Jupyter, ``bar`` on a TTY, else ``log``), ``bar``,
      ``notebook``, ``log`` or ``none``.
    stream: where the bar and lines go (default ``sys.stderr``).
  """

  def __init__(self, total: int, *, start: int = 0, mode: str = "auto",
               stream: TextIO | None = None):
    if mode not in MODES:
      raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    self._stream = stream or sys.stderr
    if mode == "auto":
      isatty = getattr(self._stream, "isatty", lambda: False)
      console = stream is None or stream in (sys.stderr, sys.stdout)
      mode = "notebook" if console and in_notebook() else ("bar" if isatty() else "log")
    self.total = total
    self.done = start
    self._start_done = start
    self._t0 = time.monotonic()
    self.best: float | None = None
    self.valid_rate: float | None = None
    self._bar: Any = None
    self.mode = mode
    if mode in ("bar", "notebook"):
      self._bar = self._make_bar(mode)
      if self._bar is None:
        self.mode = "log"

  def _make_bar(self, mode: str) -> Any:
    """A tqdm bar; None when the notebook widget cannot be drawn (no ipywidgets)."""
    kwargs = dict(total=self.total, initial=self.done, unit="proposal", desc="search",
                  dynamic_ncols=True, leave=True, smoothing=0.1,
                  bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| "
                             "[{elapsed}<{remaining}{postfix}]")
    if mode == "notebook":
      try:
        from tqdm.notebook import tqdm as notebook_tqdm

        with warnings.catch_warnings():
          warnings.simplefilter("ignore")
          return notebook_tqdm(**{k: v for k, v in kwargs.items()
                                  if k not in ("dynamic_ncols", "bar_format")})
      except Exception:  # ipywidgets missing or no frontend: plain lines instead.
        return None
    from tqdm import tqdm

    try:  # A terminal that reports no size (e.g. a fresh pty) would hide the bar.
      size = os.get_terminal_size(self._stream.fileno())
    except (AttributeError, OSError, ValueError):
      size = os.terminal_size((0, 0))
    if size.columns <= 0:
      kwargs.update(dynamic_ncols=False, ncols=100)
    if size.lines <= 0:
      kwargs.update(nrows=24)
    return tqdm(file=self._stream, **kwargs)

  def status(self) -> str:
    """'12/100 | best 0.6543 | valid 83% | ETA 4m10s' for the current state."""
    parts = [f"{self.done}/{self.total}"]
    parts.append(f"best {self.best:.4f}" if self.best is not None else "best -")
    parts.append(f"valid {self.valid_rate:.0%}" if self.valid_rate is not None else "valid -")
    parts.append(f"ETA {self.eta()}")
    return " | ".join(parts)

  def _postfix(self) -> str:
    best = f"best {self.best:.4f}" if self.best is not None else "best -"
    valid = f"valid {self.valid_rate:.0%}" if self.valid_rate is not None else "valid -"
    return f"{best} | {valid}"

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
    if self._bar is not None:
      self._bar.n = min(done, self.total) if self.total else done
      self._bar.set_postfix_str(self._postfix(), refresh=False)
      self._bar.refresh()

  def message(self, line: str) -> None:
    """Prints one message (above the bar, or with the status in log mode)."""
    if self.mode == "none":
      return
    if self._bar is not None:
      if self.mode == "notebook":
        print(line, file=sys.stdout, flush=True)
      else:
        self._bar.write(line, file=self._stream)
      return
    self._stream.write(f"{line}  [{self.status()}]\n")
    self._stream.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.set_postfix_str(self._postfix(), refresh=False)
      self._bar.close()
      self._bar = None
