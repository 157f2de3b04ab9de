"""Misbehaving sandbox targets of tests/test_sandbox.py and tests/test_redteam_jail.py.

They run only inside the sandbox; the red-team ones are attacker code that got past the
policy, run directly in the jail, and report what they managed (the tests check the host).
"""

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
    hoard.append(b"\1" * (50 * 2**20))  # Writes the pages: resident memory grows.


def allocate_50gb(payload: dict) -> dict:
  import numpy as np
  del payload
  return {"sum": float(np.ones(50 * 2**30 // 8).sum())}


SLEEPER = ("import pathlib, sys, time\n"
           "pathlib.Path(sys.argv[2]).touch() if len(sys.argv) > 2 else None\n"
           "time.sleep(600)")


def _daemon(argv: list, clean_env: bool = True) -> None:
  """Double fork + setsid + exec (with an empty environment): a detached daemon."""
  if os.fork() == 0:
    os.setsid()
    if os.fork():
      os._exit(0)
    try:
      os.execve(sys.executable, argv, {} if clean_env else dict(os.environ))
    finally:
      os._exit(1)
  os.wait()


def fork_children(payload: dict) -> dict:
  """Starts two sleepers and a detached daemon (with an empty environment unless
  ``payload['clean_env']`` is false), all with ``payload['token']`` in their argv; waits
  until all three run, then hangs or returns."""
  import subprocess

  from spark_clrs.isolation import sandbox
  token = payload["token"]
  flags = [os.path.join(os.getcwd(), f"started_{i}") for i in range(3)]
  for flag in flags[:2]:
    subprocess.Popen([sys.executable, "-c", SLEEPER, token, flag])
  _daemon([sys.executable, "-c", SLEEPER, token, flags[2]], payload.get("clean_env", True))
  deadline = time.monotonic() + 20
  while time.monotonic() < deadline and not all(os.path.exists(f) for f in flags):
    time.sleep(0.02)
  started = sum(os.path.exists(f) for f in flags)
  sandbox.report_progress(stage="forked", started=started)
  if payload.get("hang"):
    sleep_forever(payload)
  return {"started": started}


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
  from spark_clrs.isolation import sandbox
  sandbox.report_progress(stage="shape", candidate=payload.get("name", ""))
  sleep_forever(payload)
  return {}


def kill_jail_init(payload: dict) -> dict:
  """SIGKILLs PID 1 of its PID namespace (the jail's init; the kernel ignores it)."""
  import signal
  del payload
  os.kill(1, signal.SIGKILL)
  time.sleep(0.2)
  return {"init_alive": os.path.exists("/proc/1"), "pid": os.getpid()}


def start_token_and_hang(payload: dict) -> dict:
  """Starts a sleeper with ``payload['token']`` in its argv, says so, then hangs."""
  import subprocess

  from spark_clrs.isolation import sandbox
  flag = os.path.join(os.getcwd(), "started")
  subprocess.Popen([sys.executable, "-c", SLEEPER, payload["token"], flag])
  while not os.path.exists(flag):
    time.sleep(0.02)
  sandbox.report_progress(stage="started")
  sleep_forever(payload)
  return {}


# --------------------------------------------------------------- red team (attacker code)


def _attempt(fn) -> str:
  """'ok: ...' or 'blocked: <exception type>' (never the exception's text)."""
  try:
    out = fn()
  except BaseException as e:  # Any failure is what the attacker sees.
    return f"blocked: {type(e).__name__}"
  return f"ok: {out!r}"[:2000]


def write_outside(payload: dict) -> dict:
  """Writes and appends to every path in ``payload['paths']``; overwrites the SQLite file
  ``payload['sqlite']`` through sqlite3 and through plain writes."""
  import sqlite3
  out = {}
  for path in payload["paths"]:
    def write(path=path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write("owned")
      return path
    out[path] = _attempt(write)

  def db():
    con = sqlite3.connect(payload["sqlite"])
    con.execute("CREATE TABLE IF NOT EXISTS pwned (x)")
    con.execute("INSERT INTO pwned VALUES (1)")
    con.commit()
    return "written"
  out["sqlite3"] = _attempt(db)
  out["sqlite_raw"] = _attempt(lambda: open(payload["sqlite"], "r+b").write(b"X" * 100))
  return out


def read_secrets(payload: dict) -> dict:
  """Tries every way to read the parent's secrets: files, /proc/*/environ, /proc/<parent
  pid>/environ, its cmdline, our own environment. Returns what it got."""
  got = {"environ": dict(os.environ)}
  for path in payload["files"]:
    got[path] = _attempt(lambda path=path: open(path).read())
  parent = payload["parent_pid"]
  for what in ("environ", "cmdline"):
    got[f"parent_{what}"] = _attempt(lambda what=what: open(f"/proc/{parent}/{what}", "rb").read())
  visible = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
  got["visible_pids"] = visible
  for pid in visible:
    got[f"environ_{pid}"] = _attempt(lambda pid=pid: open(f"/proc/{pid}/environ", "rb").read())
  got["home_listing"] = _attempt(lambda: os.listdir(payload["home"]))
  return got


def reach_network(payload: dict) -> dict:
  """Connects to the host's 127.0.0.1 TCP listener, fetches the host's HTTP URL, connects
  to the host's unix socket (file and abstract) and tries an outside address."""
  import socket
  import urllib.request
  out = {}

  def tcp():
    with socket.create_connection(("127.0.0.1", payload["tcp_port"]), timeout=2) as s:
      s.sendall(b"hello from the jail")
    return "connected"
  out["tcp"] = _attempt(tcp)
  out["http"] = _attempt(lambda: urllib.request.urlopen(payload["http_url"], timeout=2).read())

  def unix(address):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
      s.settimeout(2)
      s.connect(address)
      s.sendall(b"hello from the jail")
    return "connected"
  out["unix"] = _attempt(lambda: unix(payload["unix_path"]))
  out["abstract"] = _attempt(lambda: unix("\0" + payload["abstract_name"]))

  def outside():
    with socket.create_connection(("192.0.2.1", 80), timeout=2):  # TEST-NET-1.
      return "connected"
  out["outside"] = _attempt(outside)
  out["interfaces"] = _attempt(lambda: sorted(n for _, n in socket.if_nameindex()))
  return out


def identity(payload: dict) -> dict:
  """Who and where the jail's process is."""
  import socket
  del payload
  return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
          "setuid0": _attempt(lambda: os.setuid(0)),
          "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
          "hostname": socket.gethostname(), "root": sorted(os.listdir("/")),
          "cwd": os.getcwd(), "tmpdir": os.environ.get("TMPDIR"),
          "cwd_writable": os.access(os.getcwd(), os.W_OK),
          "usr_writable": _attempt(lambda: open("/usr/spark_jail_probe", "w")),
          "dev": sorted(os.listdir("/dev"))}


def daemon_escape(payload: dict) -> dict:
  """Leaves a detached daemon (setsid, double fork, empty environment) and returns."""
  flag = os.path.join(os.getcwd(), "daemon_started")
  _daemon([sys.executable, "-c", SLEEPER, payload["token"], flag])
  deadline = time.monotonic() + 20
  while time.monotonic() < deadline and not os.path.exists(flag):
    time.sleep(0.02)
  return {"started": os.path.exists(flag)}


def fork_bomb(payload: dict) -> dict:
  """Forks sleeping copies until fork fails (or ``payload['attempts']``); reports how many."""
  n, error = 0, ""
  try:
    while n < payload["attempts"]:
      if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
      n += 1
  except OSError as e:
    error = type(e).__name__
  return {"forked": n, "error": error}


def huge_file(payload: dict) -> dict:
  """Writes one file of ``payload['mb']`` MiB into the workdir."""
  block = b"\0" * 2**20

  def write():
    with open("big.bin", "wb") as f:
      for _ in range(payload["mb"]):
        f.write(block)
    return "written"
  return {"write": _attempt(write), "size": os.path.getsize("big.bin")}


def fill_workdir(payload: dict) -> dict:
  """Writes ``payload['files']`` files of ``payload['kb']`` KiB each, then hangs."""
  block = b"\1" * (payload["kb"] * 1024)
  for i in range(payload["files"]):
    with open(f"fill_{i}", "wb") as f:
      f.write(block)
  sleep_forever(payload)
  return {}


def fill_tmp(payload: dict) -> dict:
  """Writes ``payload['name']`` in /tmp and /dev/shm until they are full (tmpfs)."""
  out = {}
  block = b"\2" * 2**20
  for where in ("/tmp", "/dev/shm"):
    written = 0
    try:
      with open(os.path.join(where, payload["name"]), "wb") as f:
        for _ in range(4096):
          f.write(block)
          f.flush()
          written += 1
    except OSError as e:
      out[where + "_error"] = type(e).__name__
    out[where] = written
  return out


def poison(payload: dict) -> dict:
  """Leaves traces for the next request: a module attribute, a file in /tmp, a variable."""
  import json
  del payload
  json.POISONED = True
  os.environ["POISONED"] = "1"
  with open("/tmp/poisoned", "w") as f:
    f.write("1")
  return {"poisoned": True}


def poisoned(payload: dict) -> dict:
  """Reports any trace ``poison`` left."""
  import json
  del payload
  return {"module": getattr(json, "POISONED", False), "env": os.environ.get("POISONED"),
          "tmp": os.path.exists("/tmp/poisoned"), "files": sorted(os.listdir("."))}


def read_input_write_output(payload: dict) -> dict:
  """Reads the input file the caller put in the workdir, writes an output file there."""
  with open(payload["input"]) as f:
    text = f.read()
  with open(payload["output"], "w") as f:
    f.write(text.upper())
  with open(payload["program"]) as f:
    program = f.read()
  return {"input": payload["input"], "output": payload["output"], "program": payload["program"],
          "program_text": program, "cwd": os.getcwd()}


# ------------------------------------------------- jail attacks (test_jail_attacks.py)


def hold_until_released(payload: dict) -> dict:
  """Writes ``mine.txt``, says it started, waits for ``release`` in its workdir (the test
  inspects the jail from the host meanwhile), then reports what the jail sees of itself."""
  with open("mine.txt", "w") as f:
    f.write("written by the jail")
  open("started", "w").close()
  deadline = time.monotonic() + payload.get("wait_s", 30)
  while time.monotonic() < deadline and not os.path.exists("release"):
    time.sleep(0.02)
  status = open("/proc/self/status").read()
  return {"uid_map": open("/proc/self/uid_map").read().split(),
          "status": [ln for ln in status.splitlines()
                     if ln.startswith(("Uid:", "Gid:", "NoNewPrivs:", "Seccomp:"))]}


def proc_sys_writable(payload: dict) -> dict:
  """Opens each /proc/sys file for writing and closes it again (never writes)."""
  out = {}
  for path in payload["paths"]:
    out[path] = _attempt(lambda path=path: os.close(os.open(path, os.O_WRONLY)))
  return out


def escape_writes(payload: dict) -> dict:
  """Tries to change the victim file and folder outside the workdir by every route a
  process in the jail has: plain paths, the workdir's parent, /proc/1/cwd, /proc/1/root,
  /proc/self/root and reopening every descriptor of this process and of the jail's init."""
  victim, folder = payload["victim"], payload["folder"]
  routes = [victim, os.path.join(os.getcwd(), "..", os.path.basename(victim)),
            "/proc/1/cwd/../" + os.path.basename(victim), "/proc/1/root" + victim,
            "/proc/self/root" + victim]
  out = {}
  for path in routes:
    out[f"write {path}"] = _attempt(lambda path=path: open(path, "a").write("owned"))
  for path in (folder, "/proc/1/root" + folder, "/proc/1/cwd/../" + os.path.basename(folder)):
    out[f"create in {path}"] = _attempt(
        lambda path=path: open(os.path.join(path, "planted.txt"), "w").write("owned"))
  for pid in ("self", "1"):
    try:
      fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
      fds = []
    for fd in fds:
      link = f"/proc/{pid}/fd/{fd}"
      out[f"readlink {link}"] = _attempt(lambda link=link: os.readlink(link))
      out[f"dir via {link}"] = _attempt(
          lambda link=link: open(os.path.join(link, "..", os.path.basename(folder),
                                              "planted.txt"), "w").write("owned"))
  return out


def nested_namespaces(payload: dict) -> dict:
  """unshare(CLONE_NEWUSER) through libc, the same through /usr/bin/unshare, and bwrap."""
  import subprocess
  libc = ctypes.CDLL(None, use_errno=True)
  out = {}
  for name, flag in (("user", 0x10000000), ("mount", 0x00020000), ("net", 0x40000000)):
    result = libc.unshare(flag)
    out[f"unshare {name}"] = [result, ctypes.get_errno()]
  for argv in (["unshare", "--user", "true"], [payload["bwrap"], "--unshare-user",
               "--ro-bind", "/", "/", "true"]):
    out[" ".join(argv[:2])] = _attempt(lambda argv=argv: subprocess.run(
        argv, capture_output=True, timeout=10).returncode)
  return out


def seccomp_probe(payload: dict) -> dict:
  """Seccomp state and the errno of system calls the filter denies (x86_64 numbers)."""
  del payload
  libc = ctypes.CDLL(None, use_errno=True)
  libc.syscall.restype = ctypes.c_long
  calls = {"ptrace": (101, 0, 0, 0, 0), "keyctl": (250, 0, 0, 0, 0), "bpf": (321, 0, 0, 0),
           "perf_event_open": (298, 0, 0, -1, -1, 0), "userfaultfd": (323, 0),
           "mount": (165, 0, 0, 0, 0, 0), "clone3": (435, 0, 0), "setns": (308, -1, 0),
           "io_uring_setup": (425, 1, 0), "kexec_load": (246, 0, 0, 0, 0),
           "init_module": (175, 0, 0, 0), "open_by_handle_at": (304, -1, 0, 0),
           "ioctl TIOCSTI": (16, 0, 0x5412, 0)}
  out = {}
  for name, (nr, *args) in calls.items():
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    out[name] = [result, ctypes.get_errno()]
  status = open("/proc/self/status").read()
  out["status"] = [ln for ln in status.splitlines()
                   if ln.startswith(("Seccomp:", "NoNewPrivs:", "CapEff:"))]
  out["fork"] = _attempt(lambda: __import__("subprocess").run(["true"]).returncode)
  return out


def memfd_fill(payload: dict) -> dict:
  """Writes ``payload['mb']`` MiB into a memfd (pages no RSS watchdog sees)."""
  fd = os.memfd_create("hoard")
  block = b"\3" * 2**20
  for _ in range(payload["mb"]):
    os.write(fd, block)
  return {"written_mb": payload["mb"]}


def tmpfs_fill(payload: dict) -> dict:
  """Writes ``payload['mb']`` MiB into the jail's private /tmp (tmpfs)."""
  block = b"\4" * 2**20
  with open("/tmp/hoard", "wb") as f:
    for _ in range(payload["mb"]):
      f.write(block)
  return {"written_mb": payload["mb"]}


def burn_cpu(payload: dict) -> dict:
  """Spins, ignoring SIGXCPU when asked (then the hard limit's SIGKILL ends it)."""
  import signal
  if payload.get("ignore_sigxcpu"):
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
  x = 0
  while True:
    x += 1


def fd_audit(payload: dict) -> dict:
  """Every descriptor of this process and of the jail's init, and a write of
  ``payload['token']`` through each of the init's."""
  out = {}
  for pid in ("self", "1"):
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
      fds[fd] = _attempt(lambda fd=fd, pid=pid: os.readlink(f"/proc/{pid}/fd/{fd}"))
    out[pid] = fds
  for fd in out["1"]:
    out[f"write /proc/1/fd/{fd}"] = _attempt(
        lambda fd=fd: open(f"/proc/1/fd/{fd}", "a").write(payload["token"] + "\n"))
  return out


def plant_control_traps(payload: dict) -> dict:
  """Replaces every control file and directory name the parent ever used in the workdir
  with a link to the victim folder or a FIFO, then returns."""
  folder = payload["folder"]
  for name in (".sandbox", "inputs", "exchange", "tmp"):
    os.symlink(folder, name)
  for name in ("request.json", "progress.json", "result.json", "worker.log", "0_prog.py"):
    os.mkfifo(name)
  os.symlink(payload["victim"], "victim_link")
  return {"planted": sorted(os.listdir("."))}
