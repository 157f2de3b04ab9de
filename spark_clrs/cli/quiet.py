"""A quiet console: TensorFlow, XLA, CUDA and absl C++ log lines hidden unless ``--verbose``.

Importing TensorFlow or JAX on a machine without a GPU prints C++ log lines such as
``cudart_stub.cc:31] Could not find cuda drivers on your machine`` and
``cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error``, which read as
failures of the search. Two kinds of lines need two remedies:

* lines logged after the C++ loggers start obey ``TF_CPP_MIN_LOG_LEVEL`` (TensorFlow,
  XLA/TSL), ``GLOG_minloglevel`` and ``GRPC_VERBOSITY``, read once when the library
  loads: `install` sets them before anything imports TensorFlow or JAX;
* lines logged before absl's C++ logging is initialised (the ``cudart_stub`` lines and
  the ``WARNING: All log messages before absl::InitializeLog()`` banner) ignore every
  setting, so `install` also routes file descriptor 2 through a filter thread that
  drops C++-format log lines (``I0000 00:00:... file.cc:31] ...``) of level I and W,
  and the known harmless E lines (cuInit, duplicate CUDA plugin registration).
  Python's own ``sys.stderr`` keeps writing to the terminal directly, so the progress
  bar still sees a TTY and absl's Python log lines (``file.py:12]``) are never dropped.

Every CLI imports this module first and calls `install` (``--verbose``, or
``SPARK_CLRS_VERBOSE=1``, leaves the console untouched); `apply` repeats the Python-side
settings after flag parsing, when a flagfile may have set ``--verbose``. Library use
(``spark_clrs.search(...)`` in a notebook) changes nothing unless it calls `install`.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Sequence

VERBOSE_ENV = "SPARK_CLRS_VERBOSE"
# Minimum levels of the C++ loggers (set only when the user has not set them). 2 hides
# INFO and WARNING, as the sandbox does for candidate children (which inherit these).
ENV_LEVELS = {"TF_CPP_MIN_LOG_LEVEL": "2", "GLOG_minloglevel": "2", "GRPC_VERBOSITY": "ERROR"}
# A C++ (absl / glog / TSL) log line: level, date, time, thread, C++ source file and line.
_CPP_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+[\w./+-]+\.(?:cc|cpp|cxx|c|h)"
                       rb":\d+\] (.*)$")
_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# E-level lines that only say "no GPU here" or "plugin registered twice".
_HARMLESS_ERRORS = re.compile(
    rb"failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|"
    rb"computation placer already registered|Could not find cuda drivers|"
    rb"TF-TRT Warning|cudaGetDevice\(\) failed", re.IGNORECASE)
# Python-level chatter of the same libraries (warnings and their loggers).
_NOISY_MODULES = r"(tensorflow|tensorflow_datasets|tf_keras|keras|jax|jaxlib|haiku|clrs|" \
                 r"google\.protobuf|absl)(\.|$)"
_NOISY_LOGGERS = {"jax._src.xla_bridge": logging.ERROR, "jax": logging.WARNING,
                  "tensorflow": logging.ERROR, "matplotlib": logging.WARNING,
                  "h5py": logging.WARNING}

_state: dict[str, object] = {}


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
  """``--verbose`` / ``--verbose=true`` on the command line, or ``SPARK_CLRS_VERBOSE=1``."""
  argv = sys.argv[1:] if argv is None else argv
  flag = None
  for arg in argv:
    if arg == "--":
      break
    if arg in ("--verbose", "-verbose"):
      flag = True
    elif arg in ("--noverbose", "-noverbose"):
      flag = False
    elif arg.startswith(("--verbose=", "-verbose=")):
      flag = arg.split("=", 1)[1].strip().lower() in ("1", "true", "yes", "t", "y")
  if flag is not None:
    return flag
  return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def is_noise(line: bytes) -> bool:
  """Whether one stderr line is C++ library chatter that the quiet console hides."""
  stripped = line.rstrip(b"\r\n")
  if stripped == _BANNER:
    return True
  match = _CPP_LINE.match(stripped)
  if match is None:
    return False
  level, text = match.group(1), match.group(2)
  return level in (b"I", b"W") or (level == b"E" and bool(_HARMLESS_ERRORS.search(text)))


def install(verbose: bool | None = None) -> bool:
  """Quiets this process (unless verbose); returns whether the console is quiet.

  Idempotent. Must run before TensorFlow or JAX is imported for the environment part to
  take effect; the descriptor filter works whenever it is installed.
  """
  if verbose is None:
    verbose = verbose_requested()
  if verbose:
    return False
  for name, value in ENV_LEVELS.items():
    os.environ.setdefault(name, value)
  _python_side()
  if "filter" not in _state:
    try:
      _state["filter"] = _StderrFilter()
    except OSError:  # No fd 2 (e.g. a daemon): nothing to filter.
      _state["filter"] = None
  return True


def apply(verbose: bool) -> None:
  """After flag parsing: ``--verbose`` (maybe from a flagfile) undoes what `install` did."""
  if not verbose:
    install(False)
    return
  for name, value in ENV_LEVELS.items():
    if os.environ.get(name) == value:
      del os.environ[name]  # Only ours; a level the user set stays.
  filt = _state.pop("filter", None)
  if isinstance(filt, _StderrFilter):
    filt.close()
  warnings.filters[:] = [f for f in warnings.filters if f not in _state.get("warning_filters", [])]
  for name, level in _state.pop("logger_levels", {}).items():
    logging.getLogger(name).setLevel(level)
  chatter = _state.pop("absl_filter", None)
  if chatter is not None:
    logging.getLogger("absl").removeFilter(chatter)


class _SamplerChatter(logging.Filter):
  """Drops CLRS's per-set "Creating a dataset with N samples" INFO lines (absl logger).

  The trusted parent samples the evaluation sets itself, so without this every candidate
  prints them on the search's console; warnings and errors from CLRS still pass. Matched
  by CLRS's format string as well as its file, because a record's caller is only right when
  the ``absl`` logger is absl's own class (see `_python_side`).
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    path = record.pathname.replace(os.sep, "/")
    return not (path.endswith("clrs/_src/samplers.py") or record.msg == _SAMPLER_MESSAGE)


_SAMPLER_MESSAGE = "Creating a dataset with %i samples."


def _python_side() -> None:
  if "logger_levels" in _state:
    return
  # Import absl's logging before touching the "absl" logger: absl creates that logger with
  # its own class (whose caller lookup skips absl's frames) only if nobody created it first.
  # A CLI installs the quiet console before anything else is imported.
  from absl import logging as absl_logging  # noqa: F401

  chatter = _SamplerChatter()
  logging.getLogger("absl").addFilter(chatter)
  _state["absl_filter"] = chatter
  before = list(warnings.filters)
  warnings.filterwarnings("ignore", module=_NOISY_MODULES)
  _state["warning_filters"] = [f for f in warnings.filters if f not in before]
  levels = {}
  for name, level in _NOISY_LOGGERS.items():
    logger = logging.getLogger(name)
    levels[name] = logger.level
    if logger.level < level:
      logger.setLevel(level)
  _state["logger_levels"] = levels


def define_flag() -> None:
  """``--verbose`` for an absl CLI (no-op when already defined)."""
  from absl import flags

  if "verbose" not in flags.FLAGS:
    flags.DEFINE_boolean("verbose", False, "Show TensorFlow, XLA, CUDA and absl C++ log lines "
                         "(hidden by default; also SPARK_CLRS_VERBOSE=1).")


class _StderrFilter:
  """File descriptor 2 through a pipe and a thread that drops `is_noise` lines.

  ``sys.stderr`` is re-opened on a duplicate of the original descriptor, so Python's
  writes (progress bar, messages, tracebacks) bypass the filter and ``isatty()`` still
  tells a terminal from a log file.
  """

  def __init__(self) -> None:
    sys.stderr.flush()
    self._original = os.dup(2)
    read_end, write_end = os.pipe()
    self._read_end = read_end
    old = sys.stderr
    stream = open(os.dup(self._original), "w", buffering=1,  # noqa: SIM115
                  encoding=getattr(old, "encoding", None) or "utf-8", errors="backslashreplace")
    os.dup2(write_end, 2)
    os.close(write_end)
    self._old_stderr = old
    sys.stderr = stream
    for handler in _handlers():
      if getattr(handler, "stream", None) is old:
        handler.setStream(stream)
    self._thread = threading.Thread(target=self._pump, name="spark-quiet-stderr", daemon=True)
    self._thread.start()
    atexit.register(self.close)

  def _pump(self) -> None:
    pending = b""
    while True:
      try:
        chunk = os.read(self._read_end, 65536)
      except OSError:
        chunk = b""
      if not chunk:
        break
      pending += chunk
      *lines, pending = pending.split(b"\n")
      out = b"".join(line + b"\n" for line in lines if not is_noise(line))
      if out:
        self._write(out)
    if pending and not is_noise(pending):
      self._write(pending)
    os.close(self._read_end)

  def _write(self, data: bytes) -> None:
    try:
      os.write(self._original, data)
    except OSError:
      pass

  def close(self) -> None:
    """Puts the original descriptor back and lets the thread drain the pipe."""
    if self._thread is None:
      return
    try:
      sys.stderr.flush()
    except (OSError, ValueError):
      pass
    os.dup2(self._original, 2)  # Closes our pipe's write end: the thread sees EOF.
    self._thread.join(timeout=2.0)
    self._thread = None
    if sys.stderr is not self._old_stderr:
      stream, sys.stderr = sys.stderr, self._old_stderr
      for handler in _handlers():
        if getattr(handler, "stream", None) is stream:
          handler.setStream(self._old_stderr)


def _handlers() -> list[logging.Handler]:
  """Stream handlers of every logger (absl's Python handler included)."""
  out = list(logging.getLogger().handlers)
  for logger in list(logging.Logger.manager.loggerDict.values()):
    out.extend(getattr(logger, "handlers", []))
  try:
    from absl import logging as absl_logging

    python_handler = getattr(absl_logging.get_absl_handler(), "python_handler", None)
    if python_handler is not None:
      out.append(python_handler)
  except ImportError:
    pass
  return out


CLI_MODULES = frozenset({"spark_clrs.search", "spark_clrs.search.__main__", "spark_clrs.check", "spark_clrs.evaluate",
                         "spark_clrs.compare", "spark_clrs.transfer", "spark_clrs.report"})


def _running_cli() -> bool:
  """Whether ``python -m`` runs one of our CLIs (the notebook and library case: no)."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return getattr(spec, "name", None) in CLI_MODULES


# A CLI imports this module before anything else, so this runs before TensorFlow or JAX
# can load (evaluate.py imports them at module level).
if _running_cli():
  install()


def apply_flag() -> None:
  """`apply` with the parsed ``--verbose``, in a CLI's main (a no-op outside our CLIs)."""
  from absl import flags

  if _running_cli() and "verbose" in flags.FLAGS and flags.FLAGS.is_parsed():
    apply(bool(flags.FLAGS.verbose))
