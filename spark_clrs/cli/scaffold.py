"""What every ``python -m spark_clrs.<command>`` shares: flags, quiet console, errors, exit codes.

A command module defines its flags and a ``main(argv) -> int``; :func:`run` does the
rest the same way for all of them:

* the quiet console (:mod:`spark_clrs.cli.quiet`) is installed by the thin entry module's
  first import, before TensorFlow or JAX can load, and ``--verbose`` is defined here and
  applied as soon as the flags are parsed (a flagfile may set it);
* a bad flag, a usage problem or an error the command declares prints exactly one line,
  ``error: <reason>``, on stderr (never a traceback) and exits with status 2;
* Ctrl-C or SIGTERM prints ``interrupted; re-run the same command to resume`` and exits
  with status 130;
* otherwise the exit status is what ``main`` returns (0 for success).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from spark_clrs.cli import quiet
from spark_clrs.messages import error_line, one_line

USAGE_STATUS = 2
INTERRUPTED_STATUS = 130
INTERRUPTED = "interrupted; re-run the same command to resume"


class UsageError(Exception):
  """The command line cannot be run as given; its message is the one line shown."""


def fail(message: Any, status: int = USAGE_STATUS) -> NoReturn:
  """Prints ``error: <message>`` as one line on stderr and exits with ``status``."""
  text = error_line(message) if isinstance(message, BaseException) else one_line(message)
  print(f"error: {text}", file=sys.stderr)
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with flag errors as one line and status 2."""
  from absl import flags

  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(e)


def _interrupt(signum: int, frame: Any) -> None:
  del signum, frame
  raise KeyboardInterrupt


def run(main: Callable[[list[str]], int], define_flags: Callable[[], None], *,
        errors: Sequence[type[BaseException]] = ()) -> NoReturn:
  """Defines the flags, parses them and runs ``main`` with the shared conventions.

  Args:
    main: the command; gets the positional arguments (``argv[0]`` is the program) and
      returns the exit status.
    define_flags: defines the command's absl flags.
    errors: exception types that mean "cannot go on as asked" (one line, status 2) besides
      :class:`UsageError`.
  """
  from absl import app, flags

  define_flags()
  quiet.define_flag()
  # --help lists the command's own flags (absl lists the key flags of the program file).
  for flag in flags.FLAGS.get_key_flags_for_module(main.__module__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  expected = (UsageError, *errors)

  def wrapped(argv: list[str]) -> NoReturn:
    quiet.apply_flag()
    signal.signal(signal.SIGTERM, _interrupt)  # A scheduler's stop is a Ctrl-C.
    try:
      status = main(argv)
    except expected as e:
      fail(e)
    except KeyboardInterrupt:
      print(INTERRUPTED, file=sys.stderr)
      sys.exit(INTERRUPTED_STATUS)
    sys.exit(status)

  app.run(wrapped, flags_parser=parse_flags)
  raise AssertionError("app.run returned")  # It always exits.


__all__ = ["INTERRUPTED", "INTERRUPTED_STATUS", "USAGE_STATUS", "UsageError", "fail", "parse_flags",
           "run"]
