"""Tests for ``spark_clrs.programs.regions``: parsing, replacing and diffing factor regions."""

import textwrap

from absl.testing import absltest, parameterized

import processors
from spark_clrs.programs import regions

PROGRAM = textwrap.dedent('''\
    """A toy program with two factor regions."""
    import jax

    SCALE = 2.0


    def step(x):
      # ===== BEGIN OPERATOR REGION =====
      layer = jax.nn.relu
      # ===== END OPERATOR REGION =====
      # ===== BEGIN ACTION REGION =====
      y = layer(x) * SCALE
      # ===== END ACTION REGION =====
      return y
    ''')


def _with(text: str, old: str, new: str) -> str:
  assert old in text, old
  return text.replace(old, new, 1)


class ParseTest(parameterized.TestCase):

  def test_regions_in_file_order_with_lines_and_bodies(self):
    parsed = regions.parse_regions(PROGRAM)
    self.assertEqual(list(parsed), ["OPERATOR", "ACTION"])
    self.assertEqual((parsed["OPERATOR"].begin, parsed["OPERATOR"].end), (8, 10))
    self.assertEqual((parsed["ACTION"].begin, parsed["ACTION"].end), (11, 13))
    self.assertEqual(parsed["ACTION"].body, "  y = layer(x) * SCALE\n")
    self.assertEqual(regions.region_names(PROGRAM), ["OPERATOR", "ACTION"])
    self.assertEqual(regions.get_region(PROGRAM, "OPERATOR"), "  layer = jax.nn.relu\n")

  @parameterized.parameters(*processors.seed_names())
  def test_seeds_have_operator_then_action(self, seed):
    text = processors.resolve(seed).read_text()
    self.assertEqual(regions.region_names(text), ["OPERATOR", "ACTION"])

  def test_other_factor_names_and_empty_bodies(self):
    text = "# ===== BEGIN MEMORY_2 REGION =====\n# ===== END MEMORY_2 REGION =====\n"
    parsed = regions.parse_regions(text)
    self.assertEqual(list(parsed), ["MEMORY_2"])
    self.assertEqual(parsed["MEMORY_2"].body, "")

  def test_no_regions(self):
    self.assertEqual(regions.parse_regions("x = 1\n"), {})

  @parameterized.named_parameters(
      ("missing_end", "  # ===== END ACTION REGION =====\n", "", r"^line 11: BEGIN ACTION REGION "
       r"is never closed; add '# ===== END ACTION REGION ====='"),
      ("missing_begin", "  # ===== BEGIN ACTION REGION =====\n", "",
       r"^line 12: END ACTION REGION has no matching BEGIN"),
      ("duplicated", "  return y\n",
       "  # ===== BEGIN OPERATOR REGION =====\n  # ===== END OPERATOR REGION =====\n  return y\n",
       r"^line 14: region OPERATOR is duplicated \(first BEGIN on line 8\)"),
      ("nested", "  y = layer(x) * SCALE\n",
       "  # ===== BEGIN INNER REGION =====\n  y = 1\n  # ===== END INNER REGION =====\n",
       r"^line 12: BEGIN INNER REGION is nested inside ACTION \(opened on line 11\)"),
      ("crossed_end", "  # ===== END OPERATOR REGION =====\n",
       "  # ===== END ACTION REGION =====\n",
       r"^line 10: END ACTION REGION closes OPERATOR, which was opened on line 8"),
      ("malformed_lowercase", "# ===== BEGIN ACTION REGION =====", "# ===== begin action region =====",
       r"^line 11: malformed region marker"),
      ("malformed_no_name", "# ===== END OPERATOR REGION =====", "# ===== END REGION =====",
       r"^line 10: malformed region marker"),
  )
  def test_bad_markers_name_the_line(self, old, new, pattern):
    with self.assertRaisesRegex(regions.RegionError, pattern):
      regions.parse_regions(_with(PROGRAM, old, new))

  def test_closed_twice_says_where_it_was_closed(self):
    text = PROGRAM + "# ===== END ACTION REGION =====\n"
    with self.assertRaisesRegex(regions.RegionError, r"line 15: .*already closed on line 13"):
      regions.parse_regions(text)

  def test_missing_region_names_present_ones(self):
    with self.assertRaisesRegex(regions.RegionError,
                                r"missing region\(s\) GATE \(program has: OPERATOR, ACTION\)"):
      regions.get_region(PROGRAM, "GATE")


class ReplaceTest(absltest.TestCase):

  def test_replace_keeps_everything_else_byte_identical(self):
    new = regions.replace_region(PROGRAM, "ACTION", "  y = layer(x) + x\n  y = y * SCALE\n")
    old_lines, new_lines = PROGRAM.split("\n"), new.split("\n")
    self.assertEqual(new_lines[:11], old_lines[:11])  # Up to and including BEGIN ACTION.
    self.assertEqual(new_lines[13:], old_lines[12:])  # From END ACTION on.
    self.assertEqual(regions.get_region(new, "ACTION"), "  y = layer(x) + x\n  y = y * SCALE\n")
    self.assertEqual(regions.get_region(new, "OPERATOR"),
                     regions.get_region(PROGRAM, "OPERATOR"))

  def test_replace_with_own_body_is_identity(self):
    for seed in processors.seed_names():
      text = processors.resolve(seed).read_text()
      for name in regions.region_names(text):
        self.assertEqual(regions.replace_region(text, name, regions.get_region(text, name)),
                         text)

  def test_missing_trailing_newline_is_added_and_empty_body_allowed(self):
    new = regions.replace_region(PROGRAM, "OPERATOR", "  layer = jax.nn.gelu")
    self.assertEqual(regions.get_region(new, "OPERATOR"), "  layer = jax.nn.gelu\n")
    empty = regions.replace_region(PROGRAM, "OPERATOR", "")
    self.assertEqual(regions.get_region(empty, "OPERATOR"), "")
    self.assertEqual(len(empty.split("\n")), len(PROGRAM.split("\n")) - 1)

  def test_replace_unknown_region_raises(self):
    with self.assertRaisesRegex(regions.RegionError, "missing region"):
      regions.replace_region(PROGRAM, "GATE", "x = 1\n")

  def test_skeleton_hides_only_unkept_bodies(self):
    skel = regions.skeleton(PROGRAM, keep=["ACTION"])
    self.assertIn("layer = jax.nn.relu", skel)
    self.assertNotIn("y = layer(x) * SCALE", skel)
    self.assertIn("<ACTION body: editable>", skel)
    self.assertIn("# ===== END ACTION REGION =====", skel)


class DiffTest(absltest.TestCase):

  def test_identical(self):
    diff = regions.diff_factors(PROGRAM, PROGRAM)
    self.assertEqual(diff.changed, ())
    self.assertFalse(diff.outside_changed)
    self.assertTrue(diff.touches_only([]))
    self.assertFalse(diff.is_entangled)
    self.assertEqual(regions.outside_scope_changes(PROGRAM, PROGRAM, ["ACTION"]), [])

  def test_in_scope_change(self):
    child = regions.replace_region(PROGRAM, "ACTION", "  y = layer(x) + 1.0\n")
    diff = regions.diff_factors(PROGRAM, child)
    self.assertEqual(diff.changed, ("ACTION",))
    self.assertFalse(diff.outside_changed)
    self.assertTrue(diff.touches_only(["ACTION"]))
    self.assertFalse(diff.touches_only(["OPERATOR"]))
    self.assertFalse(diff.is_entangled)
    self.assertEqual(regions.outside_scope_changes(PROGRAM, child, ["ACTION"]), [])
    self.assertEqual(regions.outside_scope_changes(PROGRAM, child, ["OPERATOR"]),
                     ["region ACTION"])

  def test_two_factors_are_entangled(self):
    child = regions.replace_region(PROGRAM, "ACTION", "  y = layer(x)\n")
    child = regions.replace_region(child, "OPERATOR", "  layer = jax.nn.gelu\n")
    diff = regions.diff_factors(PROGRAM, child)
    self.assertEqual(diff.changed, ("OPERATOR", "ACTION"))
    self.assertTrue(diff.is_entangled)
    self.assertTrue(diff.touches_only(["OPERATOR", "ACTION"]))

  def test_out_of_scope_text_change_names_the_child_line(self):
    child = _with(PROGRAM, "SCALE = 2.0", "SCALE = 3.0")
    diff = regions.diff_factors(PROGRAM, child)
    self.assertEqual(diff.changed, ())
    self.assertTrue(diff.outside_changed)
    self.assertTrue(diff.is_entangled)
    self.assertFalse(diff.touches_only(["OPERATOR", "ACTION"]))
    self.assertEqual(regions.outside_scope_changes(PROGRAM, child, ["ACTION"]),
                     ["read-only line 4: 'SCALE = 2.0' -> 'SCALE = 3.0'"])

  def test_added_and_removed_read_only_lines(self):
    added = PROGRAM + "print('extra')\n"
    self.assertEqual(regions.outside_scope_changes(PROGRAM, added, ["ACTION"]),
                     ["read-only line 15: '' -> \"print('extra')\""])
    removed = _with(PROGRAM, "  return y\n", "")
    problems = regions.outside_scope_changes(PROGRAM, removed, ["ACTION"])
    self.assertLen(problems, 1)
    self.assertIn("'return y'", problems[0])

  def test_marker_changes_are_outside_changes(self):
    moved = _with(PROGRAM, "  # ===== END ACTION REGION =====\n  return y\n",
                  "  return y\n  # ===== END ACTION REGION =====\n")
    diff = regions.diff_factors(PROGRAM, moved)
    self.assertTrue(diff.outside_changed)
    self.assertIn("ACTION", diff.changed)
    problems = regions.outside_scope_changes(PROGRAM, moved, ["ACTION"])
    self.assertLen(problems, 1)
    self.assertIn("'return y' -> ''", problems[0])  # It moved into the region.

    renamed = _with(_with(PROGRAM, "BEGIN ACTION", "BEGIN ACT"), "END ACTION", "END ACT")
    diff = regions.diff_factors(PROGRAM, renamed)
    self.assertTrue(diff.outside_changed)
    self.assertEqual(diff.changed, ("ACTION",))
    self.assertNotEmpty(regions.outside_scope_changes(PROGRAM, renamed, ["ACTION"]))

  def test_indentation_only_change_outside_is_detected(self):
    child = _with(PROGRAM, "  return y", "  return  y")
    self.assertTrue(regions.diff_factors(PROGRAM, child).outside_changed)

  def test_broken_child_raises(self):
    with self.assertRaises(regions.RegionError):
      regions.diff_factors(PROGRAM, _with(PROGRAM, "  # ===== END ACTION REGION =====\n", ""))


class DriftRepairTest(absltest.TestCase):
  """A program-mode child whose read-only text drifted only in whitespace or comments."""

  def setUp(self):
    super().setUp()
    self.edited = regions.replace_region(PROGRAM, "ACTION", "  y = layer(x) * SCALE + 1.0\n")

  def assertRepaired(self, child):
    repair = regions.repair_drift(PROGRAM, child, ["ACTION"])
    self.assertIsNotNone(repair)
    self.assertEqual(repair.child, self.edited)
    self.assertNotEmpty(repair.drift)
    return repair

  def test_a_comment_outside_the_region(self):
    child = _with(self.edited, "def step(x):", "def step(x):  # one processor step")
    repair = self.assertRepaired(child)
    self.assertEqual(repair.drift, ("read-only line 7: 'def step(x):' -> 'def step(x):  # one "
                                    "processor step'",))

  def test_blank_lines_and_trailing_spaces(self):
    self.assertRepaired(_with(_with(self.edited, "\n\n\ndef", "\ndef"), "import jax",
                              "import jax   "))

  def test_a_comment_in_another_factor_region(self):
    self.assertRepaired(_with(self.edited, "  layer = jax.nn.relu", "  layer = jax.nn.relu  # act"))

  def test_a_uniformly_reindented_program_keeps_the_parents_indentation(self):
    lines = [("  " + line) if line.startswith("  ") else line for line in self.edited.split("\n")]
    self.assertRepaired("\n".join(lines))

  def test_a_code_or_docstring_change_outside_stays_entangled(self):
    for child in (_with(self.edited, "SCALE = 2.0", "SCALE = 3.0"),
                  _with(self.edited, "return y", "return -y"),
                  _with(self.edited, "two factor regions", "three factor regions"),
                  regions.replace_region(self.edited, "OPERATOR", "  layer = jax.nn.gelu\n")):
      with self.subTest(child):
        self.assertIsNone(regions.repair_drift(PROGRAM, child, ["ACTION"]))
        self.assertNotEmpty(regions.outside_scope_changes(PROGRAM, child, ["ACTION"]))

  def test_nothing_to_repair_or_markers_broken(self):
    self.assertIsNone(regions.repair_drift(PROGRAM, self.edited, ["ACTION"]))
    broken = _with(self.edited, "  # ===== END ACTION REGION =====\n", "")
    self.assertIsNone(regions.repair_drift(PROGRAM, broken, ["ACTION"]))
    swapped = _with(self.edited, "BEGIN OPERATOR", "BEGIN OPERATOR2").replace(
        "END OPERATOR", "END OPERATOR2")
    self.assertIsNone(regions.repair_drift(PROGRAM, swapped, ["ACTION"]))

  def test_reindent_body_keeps_relative_indentation(self):
    self.assertEqual(regions.reindent_body("if a:\n  b = 1\n\nc = 2\n", "    x = 1\n"),
                     "    if a:\n      b = 1\n\n    c = 2\n")


if __name__ == "__main__":
  absltest.main()
