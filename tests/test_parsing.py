"""Parsing of router, refiner and rewriter replies, and the UCB fallback bandit."""

import numpy as np
from absl.testing import absltest, parameterized

from spark_clrs.programs import regions
from spark_clrs.proposers import parsing
from spark_clrs.proposers.bandit import ucb_choose

FACTORS = ("OPERATOR", "ACTION")
PARENT = """import jax


class P:

  def __call__(self, x):
    # ===== BEGIN OPERATOR REGION =====
    width = 4
    # ===== END OPERATOR REGION =====
    # ===== BEGIN ACTION REGION =====
    y = x * width
    if y is None:
      y = x
    # ===== END ACTION REGION =====
    return y
"""


def _with_action(body: str) -> str:
  return regions.replace_region(PARENT, "ACTION", body)


class RouterParsingTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("bare", '{"scope": "ACTION", "rationale": "aggregation"}', "ACTION"),
      ("fenced", 'Sure.\n```json\n{"scope": "OPERATOR", "rationale": "w"}\n```\nDone.', "OPERATOR"),
      ("prose_around", 'I pick {"scope": "ACTION", "rationale": "r"} because reasons.', "ACTION"),
      ("lower_case", '{"scope": "action"}', "ACTION"),
      ("region_suffix", '{"scope": "ACTION REGION", "rationale": ""}', "ACTION"),
      ("reasoning_block", '<think>{"scope": "OPERATOR"}</think>{"scope": "ACTION"}', "ACTION"),
      ("thinking_block", '<thinking>{"scope": "OPERATOR"}</thinking>{"scope": "ACTION"}', "ACTION"),
      ("lone_closing_tag", 'so {"scope": "OPERATOR"} maybe\n</think>\n{"scope": "ACTION"}', "ACTION"),
      ("braces_in_prose", 'Set {x} first. {"scope": "OPERATOR", "rationale": "{nested}"}', "OPERATOR"),
  )
  def test_valid(self, reply, scope):
    self.assertEqual(parsing.parse_router_reply(reply, FACTORS).scope, scope)

  def test_rationale_is_kept(self):
    choice = parsing.parse_router_reply('{"scope": "ACTION", "rationale": " max agg "}', FACTORS)
    self.assertEqual(choice.rationale, "max agg")

  @parameterized.named_parameters(
      ("empty", "", "empty"),
      ("no_json", "I would edit the ACTION region.", "no JSON object"),
      ("broken_json", '{"scope": "ACTION", ', "no JSON object"),
      ("no_scope", '{"factor": "ACTION"}', "no string field 'scope'"),
      ("unknown_scope", '{"scope": "ATTENTION"}', "'ATTENTION' is not one of the factors"),
      ("list_scope", '{"scope": ["ACTION"]}', "no string field 'scope'"),
  )
  def test_invalid(self, reply, message):
    with self.assertRaisesRegex(parsing.ReplyError, message):
      parsing.parse_router_reply(reply, FACTORS)


class DirectiveParsingTest(absltest.TestCase):

  def test_plain(self):
    text = "Change: use mean\nWhy: smoother\nExpected effect: better OOD"
    self.assertEqual(parsing.parse_directive(f"\n{text}\n\n"), text)

  def test_whole_reply_fenced(self):
    self.assertEqual(parsing.parse_directive("```\nChange: x\n```"), "Change: x")

  def test_reasoning_removed(self):
    self.assertEqual(parsing.parse_directive("<think>hmm</think>Change: y"), "Change: y")

  def test_empty(self):
    for reply in ("", "   ", "<think>only thoughts</think>", None):
      with self.assertRaisesRegex(parsing.ReplyError, "empty"):
        parsing.parse_directive(reply)

  def test_lone_closing_tag_removes_the_reasoning(self):
    self.assertEqual(parsing.parse_directive("Change: drafted\n</think>\nChange: y"), "Change: y")

  def test_several_alternatives_keep_the_first(self):
    text = "Change: a\nWhy: b\nExpected effect: c\n\nChange: d\nWhy: e"
    self.assertEqual(parsing.parse_directive(text), "Change: a\nWhy: b\nExpected effect: c")

  def test_json_directive(self):
    self.assertEqual(parsing.parse_directive('{"directive": "Change: z"}'), "Change: z")
    for reply in ('{"scope": "ACTION"}', "[1, 2, 3]", '{"a": {"b": [{"c": ['):
      with self.assertRaisesRegex(parsing.ReplyError, "JSON"):
        parsing.parse_directive(reply)

  def test_a_directive_field_wherever_it_sits(self):
    for reply in ('{"directive": "Change: z"}',
                  'My answer: {"directive": "Change: z", "why": "w"} -- hope it helps.',
                  '```json\n{"directive": "Change: z"}\n```',
                  'Sure.\n```json\n{"response": {"scope": "ACTION", "directive": "Change: z"}}\n```',
                  '[{"note": 1}, {"directive": "  Change: z  "}]'):
      with self.subTest(reply):
        self.assertEqual(parsing.parse_directive(reply), "Change: z")

  def test_prose_outside_code_blocks_is_the_directive(self):
    directive = "Change: mean aggregation\nWhy: sums grow with N\nExpected effect: better OOD"
    reply = (f"{directive}\n\nFor example:\n```python\nmsgs = jnp.mean(msgs, axis=1)\n```\n"
             "The rewriter can adapt it.")
    self.assertEqual(parsing.parse_directive(reply),
                     f"{directive}\n\nFor example:\n\nThe rewriter can adapt it.")

  def test_region_markers_around_a_directive_are_dropped(self):
    reply = ("# ===== BEGIN ACTION REGION =====\nChange: gate the update\nWhy: stability\n"
             "# ===== END ACTION REGION =====")
    self.assertEqual(parsing.parse_directive(reply), "Change: gate the update\nWhy: stability")

  def test_a_prose_fence_is_unwrapped(self):
    self.assertEqual(parsing.parse_directive("```text\nChange: x\nWhy: y\n```"),
                     "Change: x\nWhy: y")

  def test_unfenced_code_before_the_directive_is_dropped(self):
    reply = f"{PARENT}\n" + "\n" * 3 + "Change: halve the width\nWhy: cost"
    self.assertEqual(parsing.parse_directive(reply), "Change: halve the width\nWhy: cost")

  def test_only_code_is_refused(self):
    for reply in ("```python\ny = x\n```", "# ===== BEGIN ACTION REGION =====\n",
                  f"```\n{PARENT}```"):
      with self.subTest(reply), self.assertRaisesRegex(parsing.ReplyError, "code instead"):
        parsing.parse_directive(reply)

  def test_code_instead_of_a_directive(self):
    with self.assertRaisesRegex(parsing.ReplyError, "code instead of a directive"):
      parsing.parse_directive(f"```python\n{PARENT}```")

  def test_far_too_long_reply_is_refused(self):
    with self.assertRaisesRegex(parsing.ReplyError, "characters long"):
      parsing.parse_directive("Change: " + "x " * 10000)

  def test_long_directive_is_capped(self):
    out = parsing.parse_directive("Change: " + "x" * 5000)
    self.assertLessEqual(len(out), parsing.MAX_DIRECTIVE_CHARS + 4)


class ChildExtractionTest(absltest.TestCase):

  def test_program_mode(self):
    child = _with_action("    y = x * width * 2\n")
    reply = f"Here it is.\n```python\n{child}```\n"
    self.assertEqual(parsing.extract_child(reply, PARENT, "ACTION"), child)

  def test_program_mode_restores_trailing_newline(self):
    child = _with_action("    y = x + width\n")
    reply = f"```python\n{child.rstrip()}\n```"
    self.assertEqual(parsing.extract_child(reply, PARENT, "ACTION"), child)

  def test_program_mode_picks_the_block_with_markers(self):
    child = _with_action("    y = x - width\n")
    reply = f"Old line:\n```python\ny = x * width\n```\nNew:\n```python\n{child}```"
    self.assertEqual(parsing.extract_child(reply, PARENT, "ACTION"), child)

  def test_region_mode_reindents(self):
    reply = "```python\ny = jnp.maximum(x, width)\nif y is None:\n  y = x\n```"
    child = parsing.extract_child(reply, PARENT, "ACTION", mode="region")
    self.assertEqual(regions.get_region(child, "ACTION"),
                     "    y = jnp.maximum(x, width)\n    if y is None:\n      y = x\n")
    self.assertEqual(regions.diff_factors(PARENT, child).changed, ("ACTION",))
    self.assertFalse(regions.diff_factors(PARENT, child).outside_changed)

  def test_truncated_block(self):
    reply = "```python\n" + PARENT[:120]
    with self.assertRaisesRegex(parsing.ReplyError, "truncated"):
      parsing.extract_child(reply, PARENT, "ACTION")

  def test_finish_reason_length(self):
    child = _with_action("    y = 1\n")
    reply = f"```python\n{child}```"
    with self.assertRaisesRegex(parsing.ReplyError, "finish_reason=length"):
      parsing.extract_child(reply, PARENT, "ACTION", finish_reason="length")

  def test_fenceless(self):
    with self.assertRaisesRegex(parsing.ReplyError, "no fenced code block"):
      parsing.extract_child(_with_action("    y = 1\n"), PARENT, "ACTION")

  def test_unchanged_parent(self):
    for mode, code in (("program", PARENT), ("region", regions.get_region(PARENT, "ACTION"))):
      with self.assertRaisesRegex(parsing.ReplyError, "unchanged"):
        parsing.extract_child(f"```python\n{code}```", PARENT, "ACTION", mode=mode)

  def test_missing_region_in_program(self):
    with self.assertRaisesRegex(parsing.ReplyError, "no ACTION region"):
      parsing.extract_child("```python\ny = x\n```", PARENT, "ACTION")

  def test_broken_markers(self):
    broken = PARENT.replace("# ===== END ACTION REGION =====", "")
    with self.assertRaisesRegex(parsing.ReplyError, "markers are broken"):
      parsing.extract_child(f"```python\n{broken}```", PARENT, "ACTION")

  def test_region_mode_rejects_markers(self):
    with self.assertRaisesRegex(parsing.ReplyError, "marker lines"):
      parsing.extract_child("```python\n# ===== BEGIN ACTION REGION =====\ny = 1\n```", PARENT,
                            "ACTION", mode="region")

  def test_bad_mode(self):
    with self.assertRaisesRegex(ValueError, "sar_output"):
      parsing.extract_child("```\nx\n```", PARENT, "ACTION", mode="diff")


class CodeBlocksTest(absltest.TestCase):

  def test_blocks_and_languages(self):
    text = "a\n```python\nx = 1\n```\nb\n~~~\ny\n~~~\n```py\nz"
    blocks = parsing.code_blocks(text)
    self.assertEqual([(b.language, b.body, b.closed) for b in blocks],
                     [("python", "x = 1\n", True), ("", "y\n", True), ("py", "z", False)])
    self.assertEqual([text[slice(*b.span)] for b in blocks],
                     ["```python\nx = 1\n```", "~~~\ny\n~~~", "```py\nz"])


class DriftRepairTest(absltest.TestCase):

  def test_program_mode_drift_is_repaired_and_recorded(self):
    child = _with_action("    y = x * width * 3\n").replace("class P:", "class P:  # drifted")
    decision = {}
    repaired = parsing.repair_drift(child, PARENT, ("ACTION",), "program", decision)
    self.assertEqual(repaired, _with_action("    y = x * width * 3\n"))
    self.assertEqual(decision["drift_repaired"],
                     ["read-only line 4: 'class P:' -> 'class P:  # drifted'"])

  def test_code_change_region_mode_and_no_child_pass_through(self):
    entangled = _with_action("    y = x\n").replace("return y", "return -y")
    for child, mode in ((entangled, "program"), (_with_action("    y = 2\n"), "region"),
                        (None, "program")):
      decision = {}
      self.assertEqual(parsing.repair_drift(child, PARENT, ("ACTION",), mode, decision), child)
      self.assertEqual(decision, {})


class BanditTest(absltest.TestCase):

  def test_unpulled_arm_first(self):
    choice = ucb_choose(FACTORS, {"OPERATOR": [0.1, 0.0], "ACTION": []},
                        np.random.default_rng(0))
    self.assertEqual(choice.arm, "ACTION")
    self.assertEqual(choice.pulls, {"OPERATOR": 2, "ACTION": 0})

  def test_prefers_the_arm_with_gains(self):
    gains = {"OPERATOR": [0.0] * 10, "ACTION": [0.02, 0.0, 0.03, 0.01] * 3}
    choice = ucb_choose(FACTORS, gains, np.random.default_rng(0))
    self.assertEqual(choice.arm, "ACTION")
    self.assertGreater(choice.scores["ACTION"], choice.scores["OPERATOR"])

  def test_explores_a_rarely_pulled_arm(self):
    gains = {"OPERATOR": [0.01] * 50, "ACTION": [0.0]}
    self.assertEqual(ucb_choose(FACTORS, gains, np.random.default_rng(0)).arm, "ACTION")

  def test_ties_are_broken_by_the_rng(self):
    picks = {ucb_choose(FACTORS, {}, np.random.default_rng(s)).arm for s in range(20)}
    self.assertEqual(picks, set(FACTORS))

  def test_needs_an_arm(self):
    with self.assertRaisesRegex(ValueError, "at least one arm"):
      ucb_choose((), {}, np.random.default_rng(0))


if __name__ == "__main__":
  absltest.main()
