"""Prompt templates: strict slot filling and the SPARK templates' machine-readable tags."""

import pathlib
import re

from absl.testing import absltest

from spark_clrs.llm import prompts

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


if __name__ == "__main__":
  absltest.main()
