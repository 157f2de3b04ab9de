"""Red-team of the policy and the checks (issue 10, item 7).

Every ``red_*`` case of the candidate corpus (``tests/data/candidates/``) is an attack
seen on the landed code: reflection through ``operator``/``functools``, string annotations,
run-time dunders, numpy file/URL/pickle I/O, ``/proc/<ppid>/environ``, sockets, SQLite
outside the workdir, a detached process, monkeypatching our modules to forge the verdict
or ``param_count``, a reason that exfiltrates a secret, a NaN only at n=64, hangs that
start after the check's traces, and (issue 16) the walk-around from a JAX array's or
jaxpr's traceback to real code objects and frames, function constructors reached through
``type(f)`` or a re-export, and module aliases rebound under ``except``/``try``/walrus. Each runs through ``checks.run_checks`` (the real
sandbox, jailed once the jail lands) and must be rejected at its stage while the host is
unchanged: no sentinel file outside the workdir, no secret of the parent (environment or
file) in the verdict, no process left. Most stop at ``policy`` before any process starts;
the two that need the child share one warm worker.
"""

import importlib.util
import json
import os
import pathlib
import secrets
import sys
from unittest import mock

import psutil
from absl.testing import absltest

from spark_clrs import checks
from spark_clrs.checks import policy
from spark_clrs.isolation import sandbox

REPO = pathlib.Path(__file__).resolve().parent.parent
CORPUS_PY = REPO / "tests" / "data" / "candidates" / "corpus.py"
CORPUS_LIMITS = sandbox.Limits(timeout_s=60.0, memory_mb=4096, max_output_bytes=1 << 20)
SENTINEL_DIR = pathlib.Path("/tmp")
SENTINEL_PREFIX = "spark_redteam_sentinel"
SECRET_FILE = pathlib.Path("/tmp/spark_redteam_secret.txt")
SECRET_ENV = "SPARK_REDTEAM_API_KEY"

CATEGORIES = {
    "red_reflection_attrgetter", "red_reflection_functools_getattr",
    "red_string_annotation_typing", "red_string_annotation_dataclass", "red_runtime_dunder",
    "red_format_string_walk", "red_numpy_read_file", "red_numpy_write_file",
    "red_numpy_url", "red_numpy_pickle", "red_numpy_lib_alias", "red_proc_parent_environ",
    "red_socket_connect", "red_sqlite_outside_workdir", "red_detached_process",
    "red_monkeypatch_checks", "red_monkeypatch_macs", "red_monkeypatch_sys_modules",
    "red_write_module_global", "red_jax_config", "red_host_callback",
    "red_reason_exfiltration", "red_hang_global_counter", "red_hang_while_loop_at_ood",
    "red_nan_only_at_ood", "red_reason_flood",
    # Issue 16's walk-around route: code objects and constructors reached from JAX objects,
    # and module aliases rebound where a checker does not look.
    "red_traceback_code_object", "red_jaxpr_frame_globals", "red_function_constructor",
    "red_type_of_function_called", "red_alias_rebound_under_except",
    "red_alias_conditional_import", "red_alias_walrus",
}


def load_corpus():
  spec = importlib.util.spec_from_file_location("spark_candidate_corpus", CORPUS_PY)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module.load_corpus()


def _sentinels() -> list[pathlib.Path]:
  return sorted(SENTINEL_DIR.glob(SENTINEL_PREFIX + "*"))


def _stray_sleepers() -> list[int]:
  found = []
  for p in psutil.process_iter(["cmdline"]):
    if (p.info.get("cmdline") or [])[:2] == ["sleep", "600"]:
      found.append(p.pid)
  return found


class RedTeamPolicyTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cases = [c for c in load_corpus() if c.name.startswith("red_")]

  def test_every_attack_category_has_a_case(self):
    self.assertEqual({c.name for c in self.cases}, CATEGORIES)

  def test_policy_cases_are_refused_before_any_process_starts(self):
    for case in self.cases:
      if case.expect == "policy":
        with self.subTest(case.name):
          self.assertNotEmpty(policy.check_policy(case.candidate))

  def test_hostile_cases_are_rejected_and_the_host_is_unchanged(self):
    for path in _sentinels():
      path.unlink()
    secret_value = secrets.token_hex(16)
    secret_content = f"TOPSECRET-{secrets.token_hex(16)}"
    SECRET_FILE.write_text(secret_content + "\n")
    self.addCleanup(SECRET_FILE.unlink, missing_ok=True)
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    tmp = pathlib.Path(self.create_tempdir().full_path)
    budget = checks.default_budget()
    problems = []
    with mock.patch.dict(os.environ, {SECRET_ENV: secret_value}):
      static = [c for c in self.cases if c.expect in ("parse", "scope", "policy")]
      child = [c for c in self.cases if c not in static]
      results = []
      for case in static:  # Rejected before any process starts: no worker needed.
        results.append((case, checks.run_checks(
            case.candidate, parent_text=case.parent, scope=case.scope, budget=budget,
            workdir=tmp / case.name, limits=CORPUS_LIMITS)))
      with checks.make_worker(tmp / "worker") as worker:
        for case in child:
          results.append((case, checks.run_checks(
              case.candidate, parent_text=case.parent, scope=case.scope, budget=budget,
              workdir=tmp / case.name, limits=CORPUS_LIMITS, worker=worker)))
    for case, verdict in results:
      text = verdict.to_json()
      if verdict.feasible or verdict.stage != case.expect:
        problems.append(f"{case.name}: expected {case.expect}, got {verdict.stage}: "
                        f"{verdict.reason}")
      if secret_value in text or secret_content in text or "TOPSECRET" in text:
        problems.append(f"{case.name}: a secret is in the verdict")
      reason = json.loads(text)["reason"]
      if (len(reason) > checks.MAX_REASON_CHARS or not reason.isprintable()
          or not reason.isascii() or not reason.startswith(f"{case.expect}: ")):
        problems.append(f"{case.name}: reason is not one short printable line: {reason!r}")
      if case.expect == "policy" and (tmp / case.name).exists():
        problems.append(f"{case.name}: a policy rejection created a workdir")
    self.assertEqual(problems, [])
    self.assertEqual(_sentinels(), [], "a file was written outside the workdir")
    self.assertEqual(_stray_sleepers(), [], "a detached process outlived the checks")
    left = {p.pid for p in me.children(recursive=True)} - children_before
    self.assertEqual(left, set(), "check processes outlived the checks")

  def test_flooded_reason_is_cut_to_one_printable_line(self):
    case = next(c for c in self.cases if c.name == "red_reason_flood")
    result = sandbox.ChildResult(
        status="ok", value={"feasible": False, "stage": "interface",
                            "reason": "interface: " + case.candidate * 3},
        reason="", wall_seconds=0.0, peak_rss_mb=0.0, stderr_tail="")
    reason = checks.verdict_from_child(result).reason
    self.assertLessEqual(len(reason), checks.MAX_REASON_CHARS)
    self.assertTrue(reason.isprintable() and reason.isascii())
    self.assertTrue(reason.startswith("interface: "))


if __name__ == "__main__":
  absltest.main()
