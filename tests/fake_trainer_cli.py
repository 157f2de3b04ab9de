"""``python -m spark_clrs.search`` with a fake trainer, for CLI tests of the LLM side.

The command line, flags, exit status and run directory are the real CLI's; only the
executor is replaced by one that scores a program from its text in microseconds, so a
test of what the CLI does when the LLM provider fails needs no JAX compilation.
"""

import importlib
import pathlib
import types

from spark_clrs.search import controller

search = importlib.import_module("spark_clrs.search")  # The module (the package exports a function).


class FakeExecutor:
  """Deterministic metrics from the program text (every program trains)."""

  def start(self) -> None:
    pass

  def describe(self) -> str:
    return "executor: fake trainer (tests/fake_trainer_cli.py)"

  def close(self) -> None:
    pass

  def evaluate(self, program_path, profile, seeds, *, workdir, limits):
    del profile, seeds, workdir, limits
    text = pathlib.Path(program_path).read_text()
    score = (sum(text.encode()) % 997) / 997
    return types.SimpleNamespace(status="ok", reason="", metrics={
        "ood_val_acc": 0.3 + 0.5 * score, "ood_acc": 0.3, "val_acc": 0.9,
        "param_count": 2000 + len(text), "processor_param_count": 1000 + len(text),
        "macs": 5000 + 10 * len(text), "train_seconds": 0.1})


if __name__ == "__main__":
  controller.Controller._executor = lambda self: FakeExecutor()
  search.run_cli()
