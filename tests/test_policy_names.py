"""The policy's derived allow-list: the installed public API minus a reasoned deny-list, cached."""

import importlib.metadata
import os
import pathlib
import sys
from unittest import mock

from absl.testing import absltest

from spark_clrs.checks import policy_names


class CatalogueTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cat = policy_names.catalogue()

  def test_every_offered_module_is_catalogued_with_its_installed_version(self):
    self.assertEqual(set(self.cat.allowed), set(policy_names.OFFERED))
    for dist in policy_names.DISTRIBUTIONS:
      self.assertEqual(self.cat.versions[dist], importlib.metadata.version(dist))

  def test_allowed_names_are_public_and_never_refused(self):
    for module, names in self.cat.allowed.items():
      for name in names:
        self.assertFalse(name.startswith("_"), f"{module}.{name}")
      self.assertEmpty(names & set(self.cat.refused[module]), module)

  def test_deny_list_entries_present_in_the_install_are_refused(self):
    for module, deny in policy_names.DENY.items():
      present = set(self.cat.allowed[module]) | set(self.cat.refused[module])
      for name, category in deny.items():
        self.assertIn(category, policy_names.CATEGORIES)
        if name in present:
          self.assertNotIn(name, self.cat.allowed[module], f"{module}.{name}")

  def test_offered_submodules_are_names_of_their_parent(self):
    for path in policy_names.OFFERED:
      parent, _, last = path.rpartition(".")
      if parent:
        self.assertIn(last, self.cat.allowed[parent], path)

  def test_dangerous_objects_are_found_by_what_they_are(self):
    refused = self.cat.refused
    self.assertEqual(refused["jax"]["enable_x64"], "config")  # A config State, not listed.
    self.assertEqual(refused["jax"]["debug_nans"], "config")
    self.assertEqual(refused["jax.lax"]["add_p"], "reflection")  # A primitive.
    self.assertEqual(refused["jax.random"]["random_gamma_p"], "reflection")
    self.assertEqual(refused["dataclasses"]["FunctionType"], "constructor")
    self.assertEqual(refused["numpy"]["lib"], "io")
    self.assertEqual(refused["jax"]["experimental"], "callback")
    self.assertEqual(refused["typing"]["sys"], "module")  # A module that is not offered.

  def test_the_public_api_is_offered_not_a_hand_picked_subset(self):
    allowed = self.cat.allowed
    self.assertGreater(len(allowed["jax.numpy"]), 350)
    self.assertGreater(len(allowed["jax.lax"]), 150)
    for module, name in (("jax.numpy", "count_nonzero"), ("jax.numpy", "concat"),
                         ("jax.numpy", "isclose"), ("jax.numpy", "empty"),
                         ("jax.numpy", "fill_diagonal"), ("jax.numpy", "triu_indices"),
                         ("jax.numpy", "meshgrid"), ("jax.nn", "dot_product_attention"),
                         ("chex", "assert_is_broadcastable"), ("jax.tree", "map"),
                         ("jax.ops", "segment_sum"), ("haiku", "RMSNorm")):
      self.assertIn(name, allowed[module], f"{module}.{name}")

  def test_every_category_explains_itself(self):
    for key in policy_names.CATEGORIES:
      self.assertTrue(policy_names.explain(key).startswith("as "))


class CacheTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.default = policy_names.catalogue()  # From the user's cache (or derived once).
    self.dir = pathlib.Path(self.create_tempdir().full_path)
    self.enter_context(mock.patch.dict(os.environ, {policy_names.CACHE_ENV: str(self.dir)}))
    policy_names.catalogue.cache_clear()
    self.addCleanup(policy_names.catalogue.cache_clear)

  def test_a_cached_catalogue_is_read_without_deriving(self):
    real = policy_names.catalogue.__wrapped__  # Uncached call, reading this test's dir.
    versions = policy_names._versions()
    marked = policy_names.Catalogue(versions, {"math": frozenset({"tau"})}, {"math": {}})
    path = self.dir / f"policy_names-{policy_names.cache_key(versions)}.json"
    policy_names._write_cache(path, marked)
    with mock.patch.object(policy_names, "derive", side_effect=AssertionError("derived")), \
        mock.patch.object(policy_names, "_derive_in_subprocess",
                          side_effect=AssertionError("derived")):
      self.assertEqual(real(), marked)

  def test_the_cache_key_follows_the_installed_versions(self):
    a = policy_names.cache_key({"jax": "0.10.2"})
    self.assertNotEqual(a, policy_names.cache_key({"jax": "0.10.3"}))
    self.assertEqual(a, policy_names.cache_key({"jax": "0.10.2"}))

  def test_a_fresh_interpreter_derives_the_same_catalogue_and_it_is_cached(self):
    # The parent of a search never imports JAX: the names come from a child interpreter.
    with mock.patch.object(policy_names, "derive", side_effect=AssertionError("in-process")), \
        mock.patch.dict(sys.modules):
      sys.modules.pop("jax", None)
      found = policy_names.catalogue()
    self.assertEqual(found, self.default)
    self.assertLen(list(self.dir.glob("policy_names-*.json")), 1)


if __name__ == "__main__":
  absltest.main()
