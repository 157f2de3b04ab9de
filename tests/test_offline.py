"""The offline proposer: its move catalogue, its answers, its LiteLLM provider, and the checks.

Every catalogue move applied to every shipped seed must give a candidate that passes all
checks. The default run passes every move through the text-only stages and a rotating
sample through the full sandboxed checks; the exhaustive run at hidden=128 is marked
slow (``SPARK_CLRS_SLOW=1``).
"""

import ast
import pathlib

import pytest
from absl.testing import absltest, parameterized

import processors
from spark_clrs import checks, llm
from spark_clrs.llm import backend, offline, offline_moves, prompts
from spark_clrs.programs import regions
from spark_clrs.proposers import context

FACTORS = ("OPERATOR", "ACTION")
SEEDS = ("triplet_gmpnn", "mpnn", "pgn")
MIN_MOVES_PER_FACTOR = 20


def seed_text(name: str) -> str:
  return (processors.SEEDS_DIR / f"{name}.py").read_text()


def all_candidates() -> list[tuple[str, str, str, str]]:
  """``(seed, factor, move name, child text)`` for every applicable move on every seed."""
  out = []
  for seed in SEEDS:
    text = seed_text(seed)
    for factor in FACTORS:
      body = regions.get_region(text, factor)
      for move in offline_moves.applicable(factor, body):
        out.append((seed, factor, move.name, regions.replace_region(text, factor,
                                                                    move.apply(body))))
  return out


def refiner_prompt(text: str, scope: str, tried: str = "(none)") -> list[dict[str, str]]:
  user = prompts.render(
      "spark/refiner.user", scope=scope, task_card="t", factor_description="d",
      region=regions.get_region(text, scope).rstrip("\n"),
      read_only=regions.skeleton(text, keep=[scope]), metrics="m", tried=tried)
  return [{"role": "system", "content": "s"}, {"role": "user", "content": user}]


def rewriter_prompt(text: str, scope: str, directive: str,
                    output: str = "program") -> list[dict[str, str]]:
  user = prompts.render(
      "spark/rewriter.user", scope=scope, output=output, directive=directive,
      program=text.rstrip("\n"), region=regions.get_region(text, scope).rstrip("\n"),
      output_instructions="o")
  return [{"role": "system", "content": "s"}, {"role": "user", "content": user}]


def router_prompt(text: str) -> list[dict[str, str]]:
  user = prompts.render(
      "spark/router.user", factors="OPERATOR, ACTION", task_card="t", factor_descriptions="d",
      parent_id="p", program=text.rstrip("\n"), metrics="m", lineage="l", scope_stats="s",
      plateau="p")
  return [{"role": "system", "content": "s"}, {"role": "user", "content": user}]


class CatalogueTest(parameterized.TestCase):

  def test_names_are_unique_and_directives_name_them(self):
    names = [m.name for m in offline_moves.CATALOGUE]
    self.assertLen(set(names), len(names))
    for move in offline_moves.CATALOGUE:
      self.assertIn(f"[move: {move.name}]", move.directive())
      self.assertIn(move.factor, FACTORS)

  @parameterized.product(seed=SEEDS, factor=FACTORS)
  def test_at_least_twenty_moves_apply_per_factor(self, seed, factor):
    body = regions.get_region(seed_text(seed), factor)
    self.assertGreaterEqual(len(offline_moves.applicable(factor, body)), MIN_MOVES_PER_FACTOR)

  def test_every_move_is_factor_local_and_passes_the_static_checks(self):
    candidates = all_candidates()
    self.assertGreaterEqual(len(candidates), MIN_MOVES_PER_FACTOR * len(FACTORS) * len(SEEDS))
    for seed, factor, name, child in candidates:
      with self.subTest(seed=seed, move=name):
        parent = seed_text(seed)
        diff = regions.diff_factors(parent, child)
        self.assertEqual(diff.changed, (factor,))
        self.assertFalse(diff.outside_changed)
        self.assertIsNone(checks.static_checks(child, parent_text=parent, scope=[factor]))

  def test_moves_compose(self):
    text = seed_text("triplet_gmpnn")
    for name in ("activation_gelu", "message_width_double", "rmsnorm"):
      move = offline_moves.get_move(name)
      text = regions.replace_region(text, "OPERATOR",
                                    move.apply(regions.get_region(text, "OPERATOR")))
    body = regions.get_region(text, "OPERATOR")
    self.assertIn("activation = jax.nn.gelu", body)
    self.assertIn("mid_size = 2 * self.out_size", body)
    self.assertIn("hk.RMSNorm(axis=-1)", body)
    self.assertIsNone(offline_moves.get_move("rmsnorm").apply(body))  # Already applied.
    self.assertGreaterEqual(len(offline_moves.applicable("OPERATOR", body)), MIN_MOVES_PER_FACTOR)

  def test_unknown_move(self):
    with self.assertRaisesRegex(KeyError, "unknown offline move 'nope'"):
      offline_moves.get_move("nope")


class AnswerTest(absltest.TestCase):

  def test_router_answers_json_with_a_configured_factor(self):
    reply = offline.answer(router_prompt(seed_text("mpnn")), seed=0)
    self.assertRegex(reply, r'\{"scope": "(OPERATOR|ACTION)", "rationale": ')

  def test_refiner_skips_tried_moves(self):
    text = seed_text("pgn")
    moves = offline_moves.applicable("ACTION", regions.get_region(text, "ACTION"))
    tried = "\n".join(f"- iteration {i}: Change: x [move: {m.name}] -> worse (-0.0100)"
                      for i, m in enumerate(moves[1:]))
    for seed in range(5):
      reply = offline.answer(refiner_prompt(text, "ACTION", tried), seed=seed)
      self.assertEqual(reply, moves[0].directive())

  def test_rewriter_applies_the_named_move(self):
    text = seed_text("mpnn")
    move = offline_moves.get_move("aggregate_softmax")
    reply = offline.answer(rewriter_prompt(text, "ACTION", move.directive()))
    expected = regions.replace_region(text, "ACTION",
                                      move.apply(regions.get_region(text, "ACTION")))
    self.assertEqual(reply, f"Applied the catalogue move `aggregate_softmax` to the ACTION "
                            f"region.\n\n```python\n{expected.rstrip()}\n```\n")

  def test_rewriter_matches_a_free_text_directive(self):
    directive = "Change: aggregate messages over senders with a masked mean instead of max."
    reply = offline.answer(rewriter_prompt(seed_text("pgn"), "ACTION", directive, "region"))
    self.assertIn("`aggregate_mean`", reply)
    self.assertNotIn("BEGIN ACTION REGION", reply)

  def test_deterministic_given_seed_and_prompt(self):
    messages = refiner_prompt(seed_text("triplet_gmpnn"), "OPERATOR")
    self.assertEqual(offline.answer(messages, seed=3), offline.answer(messages, seed=3))
    self.assertGreater(len({offline.answer(messages, seed=s) for s in range(10)}), 1)

  def test_foreign_prompts_are_refused_with_a_reason(self):
    with self.assertRaisesRegex(offline.OfflineRequestError, "no <request role=.../> tag"):
      offline.answer([{"role": "user", "content": "Write a poem."}])

  def test_tried_moves_are_read_from_the_rendered_history(self):
    outcome = context.Outcome(2, ("ACTION",), "Change: x [move: aggregate_sum]", False, "finite",
                              "finite: NaN")
    self.assertIn("[move: aggregate_sum]", context.format_tried([outcome], 5))


class ProviderTest(absltest.TestCase):

  def test_litellm_routes_spark_offline_to_the_provider(self):
    offline.register()
    offline.register()  # Idempotent.
    self.assertLen([p for p in llm.litellm.custom_provider_map if p["provider"] == "spark"], 1)
    response = llm.litellm.completion(model="spark/offline",
                                      messages=router_prompt(seed_text("pgn")), seed=1)
    self.assertIn('"scope"', response.choices[0].message.content)
    self.assertGreater(response.usage.prompt_tokens, 0)

  def test_llm_reaches_the_provider_only_through_its_hook(self):
    # No module of spark_clrs.llm imports offline: the import runs offline -> llm only, and
    # a client configured for spark/ loads it by name (backend.LAZY_PROVIDERS).
    llm_dir = pathlib.Path(llm.__file__).parent
    for path in llm_dir.glob("*.py"):
      if path.stem.startswith("offline"):
        continue
      for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom))
                 else [])
        module = getattr(node, "module", None) or ""
        self.assertFalse(any("offline" in n for n in [module, *names]), path.name)
    self.assertEqual(backend.LAZY_PROVIDERS["spark"], offline.__name__)

  def test_foreign_prompt_is_a_failed_record_not_a_crash(self):
    client = llm.LLMClient(llm.LLMConfig())
    record = client.complete("openevolve", [{"role": "user", "content": "Improve this."}])
    self.assertFalse(record.ok)
    self.assertEqual(record.attempts, 1)
    self.assertIn("spark/offline", record.error)


def _check_all(test: absltest.TestCase, candidates, hidden: int,
               config: checks.CheckConfig | None) -> None:
  workdir = pathlib.Path(test.create_tempdir().full_path)
  budgets = {s: checks.default_budget(seed=s, hidden=hidden) for s in {c[0] for c in candidates}}
  with checks.make_worker(workdir / "worker") as worker:
    for i, (seed, factor, name, child) in enumerate(candidates):
      verdict = checks.run_checks(child, parent_text=seed_text(seed), scope=[factor],
                                  budget=budgets[seed], workdir=workdir / f"c{i}",
                                  hidden=hidden, config=config, worker=worker)
      with test.subTest(seed=seed, move=name):
        test.assertTrue(verdict.feasible, f"{seed} {name}: {verdict.reason}")


class MovesPassChecksTest(absltest.TestCase):

  def test_a_rotating_sample_passes_all_checks(self):
    # One move per (seed, factor), at a position that differs between seeds, at small sizes
    # (every move on every seed at full size: the slow test below).
    candidates, seen = [], {}
    for seed, factor, name, child in all_candidates():
      position = len(seen.setdefault((seed, factor), []))
      seen[seed, factor].append(name)
      shift = 7 * SEEDS.index(seed)
      if position == shift % MIN_MOVES_PER_FACTOR:
        candidates.append((seed, factor, name, child))
    self.assertLen(candidates, len(SEEDS) * len(FACTORS))
    small = checks.CheckConfig(shape_sizes=(5, 11), shape_batch=2, finite_nodes=5)
    _check_all(self, candidates, hidden=16, config=small)

  @pytest.mark.slow
  def test_every_move_on_every_seed_passes_all_checks(self):
    _check_all(self, all_candidates(), hidden=128, config=None)


if __name__ == "__main__":
  absltest.main()
