"""Prompt templates and what they tell the model: strict slot filling, the SPARK templates'
machine-readable tags, a contract that states every rule the policy enforces, and search
state rendered truthfully (signed gains, ancestors apart from siblings, counts that agree,
the fitness with its interval, never a test metric)."""

import ast
import pathlib
import re

from absl.testing import absltest

import processors
from spark_clrs.checks import policy, policy_names
from spark_clrs.llm import prompts
from spark_clrs.proposers import context
from spark_clrs.proposers.base import ProposalHistory

ROOT = pathlib.Path(__file__).resolve().parent.parent


class RenderTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir()
    self.dir.create_file("a/greet.md", "Hello {{name}}, see {{ thing }} and {{name}}.\n")
    self.dir.create_file("plain.md", "No slots here {not a slot}.\n")
    self.enter_context(absltest.mock.patch.dict("os.environ",
                                                {prompts.PROMPTS_ENV: self.dir.full_path}))

  def test_fills_every_occurrence(self):
    self.assertEqual(prompts.render("a/greet", name="Ada", thing="x"),
                     "Hello Ada, see x and Ada.\n")

  def test_slot_values_are_not_re_expanded(self):
    out = prompts.render("a/greet", name="{{thing}}", thing="{}")
    self.assertEqual(out, "Hello {{thing}}, see {} and {{thing}}.\n")

  def test_missing_slot_is_an_error_naming_it(self):
    with self.assertRaisesRegex(prompts.PromptError, r"needs slot\(s\) \['thing'\]"):
      prompts.render("a/greet", name="Ada")

  def test_unused_slot_is_an_error_naming_it(self):
    with self.assertRaisesRegex(prompts.PromptError, r"has no slot\(s\) \['extra'\]"):
      prompts.render("a/greet", name="Ada", thing="x", extra=1)

  def test_single_braces_are_literal(self):
    self.assertEqual(prompts.render("plain"), "No slots here {not a slot}.\n")

  def test_unknown_template(self):
    with self.assertRaisesRegex(prompts.PromptError, "no prompt template 'nope'"):
      prompts.render("nope")
    with self.assertRaisesRegex(prompts.PromptError, "bad template name"):
      prompts.render("../etc/passwd")

  def test_slots_and_listing(self):
    self.assertEqual(prompts.slots("a/greet"), ["name", "thing"])
    self.assertEqual(prompts.list_templates(), ["a/greet", "plain"])
    self.assertTrue(prompts.exists("plain"))
    self.assertFalse(prompts.exists("missing"))


class ShippedTemplatesTest(absltest.TestCase):

  def test_spark_templates_exist_with_expected_slots(self):
    expected = {
        "spark/router.system": [],
        "spark/router.user": ["factors", "task_card", "factor_descriptions", "parent_id",
                              "program", "metrics", "lineage", "scope_stats", "plateau"],
        "spark/router.retry": ["error", "factors"],
        "spark/refiner.system": [],
        "spark/refiner.user": ["scope", "task_card", "factor_description", "region",
                               "read_only", "metrics", "tried"],
        "spark/rewriter.system": ["contract"],
        "spark/rewriter.user": ["scope", "output", "directive", "program", "region",
                                "output_instructions"],
        "spark/rewriter.output_program": ["scope"],
        "spark/rewriter.output_region": ["scope"],
        "tasks/dfs": [],
        "tasks/_generic": ["algorithm"],
        "contract/clrs_processor": [],
        "factors/OPERATOR": [],
        "factors/ACTION": [],
        "factors/_generic": ["name"],
    }
    for name, slots in expected.items():
      with self.subTest(name):
        self.assertCountEqual(prompts.slots(name), slots)

  def test_role_prompts_carry_request_tags(self):
    for role in ("router", "refiner", "rewriter"):
      text = prompts.load(f"spark/{role}.user")
      self.assertRegex(text, rf'<request role="{role}"')
    self.assertIn("<program>", prompts.load("spark/router.user"))
    self.assertIn("<editable_region", prompts.load("spark/refiner.user"))
    self.assertIn("<tried_directives>", prompts.load("spark/refiner.user"))
    self.assertIn("<directive>", prompts.load("spark/rewriter.user"))

  def test_no_prompt_prose_in_python(self):
    # Role prompts live in prompts/; Python modules of the LLM side hold none of their wording.
    phrases = [line.strip() for name in ("router.system", "refiner.system", "rewriter.system")
               for line in prompts.load(f"spark/{name}").splitlines() if len(line.strip()) > 40]
    sources = [*sorted((ROOT / "spark_clrs" / "llm").glob("*.py")),
               *sorted((ROOT / "spark_clrs" / "proposers").glob("*.py"))]
    for path in sources:
      text = path.read_text()
      for phrase in phrases:
        self.assertNotIn(phrase[:40], text, f"{path.name} holds prompt text")
      self.assertIsNone(re.search(r"You are (the|a) ", text), path.name)


class ContractTest(absltest.TestCase):
  """A model is never refused by a rule the contract did not state."""

  def setUp(self):
    super().setUp()
    self.contract = prompts.render("contract/clrs_processor")

  def test_every_offered_module_and_every_seed_import_is_listed(self):
    listed = set(re.findall(r"[a-z_]+(?:\.[a-z_]+)*", self.contract))
    for module in policy_names.OFFERED:
      self.assertIn(module, listed, module)
    for seed in processors.seed_names():
      tree = ast.parse(processors.resolve(seed).read_text())
      for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
          self.assertIn(name, listed, f"{seed} imports {name}")

  def test_every_class_of_refusal_is_stated(self):
    said = {"io": "file I/O", "callback": "host callbacks", "debug": "debug output",
            "config": "global configuration", "reflection": "reflection",
            "compile": "compilation and export", "registry": "registrations",
            "intercept": "interceptors", "memory": "raw memory", "test": "testing utilities",
            "host": "host information", "loop": "compiled loops", "dynamic": "dynamic code",
            "constructor": "constructors of functions", "module": "Modules:"}
    self.assertEqual(set(said), set(policy_names.CATEGORIES))
    for category, words in said.items():
      self.assertIn(words, self.contract, category)
    for rule in ("`module.name`", "underscore", "`type(x)`", "`.format`", "f-strings",
                 "`self.name = ...`", "`global`", "`nonlocal`", "`match`", "`async`",
                 "metaclasses", "string annotations", "`from __future__`", "`except ... as`",
                 "at the start of a function body"):
      self.assertIn(rule, self.contract, rule)
    for name in policy.DENIED_BUILTINS:
      if name not in ("copyright", "credits", "license", "quit", "aiter", "anext"):
        self.assertIn(f"`{name}`", self.contract, name)

  def test_the_rewriters_may_import_inside_their_region(self):
    for name in ("spark/rewriter.system", "rc_sar/rewriter.system", "asr_only/rewriter.system"):
      self.assertNotIn("Do not add imports", prompts.load(name))
      self.assertIn("import it on the first line of the region", prompts.load(name))


def _row(iteration, scope, fitness, parent_fitness, program, parent, stage="ok"):
  return {"iteration": iteration, "scope": scope, "feasible": stage == "ok",
          "stage": stage, "reason": None if stage == "ok" else f"{stage}: bad",
          "fitness": fitness, "parent_fitness": parent_fitness, "program_id": program,
          "parent_id": parent}


# Program 1 is the seed (0.50). 2 and 3 are worse children of 1, 4 a better child of 2;
# 5 was rejected. The parent shown to the model is 4.
ROWS = [_row(1, "ACTION", 0.45, 0.50, "2", "1"), _row(2, "ACTION", 0.40, 0.50, "3", "1"),
        _row(3, "OPERATOR", 0.47, 0.45, "4", "2"),
        _row(4, "OPERATOR", None, 0.47, "5", "4", stage="shape")]


class SearchStateTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.history = ProposalHistory.of(ROWS)

  def test_a_factor_that_hurts_reads_as_a_loss(self):
    stats = context.format_scope_stats(self.history, ["OPERATOR", "ACTION"])
    action = next(line for line in stats.splitlines() if line.startswith("ACTION"))
    self.assertIn("2 proposals: 0 rejected or not evaluated, 2 evaluated (0 better than their "
                  "parent, 2 worse, 0 equal)", action)
    self.assertIn("mean -0.0750, best -0.0500, worst -0.1000", action)
    self.assertNotIn("+0.0000", stats)

  def test_counts_agree_with_the_rows(self):
    stats = context.format_scope_stats(self.history, ["OPERATOR", "ACTION"])
    per_factor = [int(m) for m in re.findall(r": (\d+) proposals?:", stats)]
    plateau = context.format_plateau(self.history)
    total = int(re.search(r"every lineage\): (\d+) proposal", plateau).group(1))
    self.assertEqual(sum(per_factor), total)
    self.assertEqual(total, len(ROWS))
    self.assertIn("1 rejected or not evaluated, 3 evaluated", plateau)

  def test_the_lineage_lists_ancestors_apart_from_siblings(self):
    text = context.format_lineage(self.history.outcomes, 8, parent_id="4")
    path_head, sibling_head = "Edits that made this program", "not on its path (siblings"
    self.assertLess(text.index(path_head), text.index(sibling_head))
    path = text[:text.index(sibling_head)]
    siblings = text[text.index(sibling_head):]
    self.assertIn("iteration 1 | ACTION | worse | -0.0500", path)
    self.assertIn("iteration 3 | OPERATOR | improved | +0.0200", path)
    self.assertIn("iteration 2 | ACTION | worse | -0.1000", siblings)
    self.assertIn("iteration 4 | OPERATOR | rejected (shape)", siblings)
    self.assertEqual([o.program_id for o in context.ancestry(self.history.outcomes, "4")],
                     ["2", "4"])

  def test_a_short_window_keeps_the_ancestors_first(self):
    text = context.format_lineage(self.history.outcomes, 2, parent_id="4")
    self.assertIn("iteration 1 |", text)
    self.assertIn("iteration 3 |", text)
    self.assertNotIn("siblings", text)
    self.assertEqual(context.format_lineage(self.history.outcomes, 0, parent_id="4"),
                     context.NONE)

  def test_the_fitness_carries_its_interval_and_no_test_metric_is_shown(self):
    metrics = {"ood_val_acc": 0.42, "ood_val_acc_std": 0.0, "macs": 1000,
               "ood_val_acc_per_graph": [[0.40, 0.44, 0.42, 0.42]], "ood_acc": 0.91,
               "ood_acc_std": 0.01, "test_acc": 0.9}
    for text in (context.format_metrics(metrics), context.metrics_line(metrics)):
      self.assertRegex(text, r"ood_val_acc:? 0\.4200 ± 0\.\d{4} \(95% CI, 1 seed x 4 graphs")
      self.assertNotIn("_std", text)
      self.assertNotIn("0.91", text)
      self.assertNotIn("ood_acc", text)
      self.assertNotIn("test", text)


if __name__ == "__main__":
  absltest.main()
