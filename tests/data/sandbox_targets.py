"""Misbehaving sandbox targets used by tests/test_sandbox.py (run only inside the sandbox)."""

import ctypes
import os
import sys
import time


def echo(payload: dict) -> dict:
  return {"echo": payload, "cwd": os.getcwd(), "home": os.environ.get("HOME")}


def sleep_forever(payload: dict) -> dict:
  del payload
  while True:
    time.sleep(1)


def segfault(payload: dict) -> dict:
  del payload
  ctypes.string_at(0)
  return {}


def allocate_forever(payload: dict) -> dict:
  del payload
  hoard = []
  while True:
    hoard.append(bytearray(50 * 2**20))  # Touches the pages: resident memory grows.


def allocate_50gb(payload: dict) -> dict:
  import numpy as np
  del payload
  return {"sum": float(np.ones(50 * 2**30 // 8).sum())}


def fork_children(payload: dict) -> dict:
  """Forks sleepers (one of them a setsid daemon), records their pids, then hangs or returns."""
  pids = []
  for i in range(3):
    pid = os.fork()
    if pid == 0:
      if i == 2:
        os.setsid()
        if os.fork():
          os._exit(0)  # Double fork: the grandchild is orphaned and leaves the group.
        with open(os.path.join(payload["pid_dir"], f"daemon_{os.getpid()}"), "w"):
          pass
      while True:
        time.sleep(1)
    pids.append(pid)
  with open(os.path.join(payload["pid_dir"], "children"), "w") as f:
    f.write(" ".join(map(str, pids)))
  time.sleep(0.5)  # Let the daemon write its pid file.
  if payload.get("hang"):
    sleep_forever(payload)
  return {"pids": pids}


def huge_output(payload: dict) -> dict:
  del payload
  line = "x" * 1023 + "\n"
  while True:
    sys.stdout.write(line)


def read_env(payload: dict) -> dict:
  del payload
  return {"env": dict(os.environ)}


def raise_error(payload: dict) -> dict:
  del payload
  raise ValueError("boom from the child")


def exit_early(payload: dict) -> dict:
  del payload
  sys.exit(3)


def not_a_dict(payload: dict) -> list:
  del payload
  return [1, 2, 3]


def small_jax_model(payload: dict) -> dict:
  """Inits, applies and differentiates a small Haiku MLP under the sandbox limits."""
  import haiku as hk
  import jax
  import jax.numpy as jnp

  def forward(x):
    return hk.nets.MLP([payload["hidden"], payload["hidden"], 1])(x)

  model = hk.without_apply_rng(hk.transform(forward))
  x = jnp.ones((32, payload["hidden"]))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  loss = jax.jit(jax.grad(lambda p: model.apply(p, x).sum()))
  grads = loss(params)
  return {"grad_leaves": len(jax.tree_util.tree_leaves(grads)),
          "out": float(model.apply(params, x).sum())}


def progress_then_hang(payload: dict) -> dict:
  from spark_clrs import sandbox
  sandbox.report_progress(stage="shape", candidate=payload.get("name", ""))
  sleep_forever(payload)
  return {}


def kill_worker(payload: dict) -> dict:
  """Kills its parent (the warm worker when run in one), then hangs."""
  import signal
  os.kill(os.getppid(), signal.SIGKILL)
  sleep_forever(payload)
  return {}


def record_pid_and_hang(payload: dict) -> dict:
  """Writes this process's pid to ``payload['pid_file']``, then hangs."""
  with open(payload["pid_file"] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
  os.replace(payload["pid_file"] + ".tmp", payload["pid_file"])
  sleep_forever(payload)
  return {}
