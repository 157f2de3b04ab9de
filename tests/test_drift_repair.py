"""Drift repair in ``--sar_output=program`` mode (SPEC §1 step 5), through the real proposers.

A rewriter that retypes the read-only part of the program and drifts only in whitespace
or a comment gets its region spliced into the parent (``decision["drift_repaired"]``);
one that changes code outside its region keeps its child, and the controller's scope rule
rejects it as entangled. The LLM is a scripted server on 127.0.0.1.
"""

import re

import numpy as np
from absl.testing import absltest, parameterized
from llm_server import Reply, ScriptedServer

import processors
from spark_clrs import llm
from spark_clrs.programs import entanglement, regions
from spark_clrs.proposers import ParentInfo, ProposalHistory, ProposerConfig, make_proposer

FACTORS = ("OPERATOR", "ACTION")
SEED = (processors.SEEDS_DIR / "triplet_gmpnn.py").read_text()
METRICS = {"ood_val_acc": 0.4321, "macs": 123456, "param_count": 999}
NEW_LINE = "    nxt_hidden = 0.5 * (nxt_hidden + hidden)\n"
CHILD = regions.replace_region(SEED, "ACTION", regions.get_region(SEED, "ACTION") + NEW_LINE)
# What a model retyping ~9,000 read-only characters drifts in: a comment, trailing spaces,
# a blank line.
DRIFTED = (CHILD.replace("# Masked entries of a max-aggregation", "# Masked max entries", 1)
           .replace("    return nxt_hidden, tri_msgs\n", "    return nxt_hidden, tri_msgs   \n", 1)
           .replace("\n\n\ndef get_processor_factory", "\n\ndef get_processor_factory", 1))
CODE_OUTSIDE = CHILD.replace("BIG_NUMBER = 1e6", "BIG_NUMBER = 1e4", 1)


class Roles:
  """Answers each role's request: ACTION as the scope, a directive, the given program."""

  def __init__(self, program: str):
    self.replies = {
        "router": '{"scope": "ACTION", "rationale": "the state drifts"}',
        "refiner": "Change: average the new state with the old one\nWhy: drift\n"
                   "Expected effect: steadier state",
        "rewriter": f"Here it is.\n```python\n{program}```\n",
    }

  def __call__(self, request: dict) -> Reply:
    for message in request["messages"]:
      match = re.search(r'<request role="(\w+)"', message["content"])
      if match:
        return Reply(self.replies[match.group(1)])
    raise AssertionError("request without a role tag")


class DriftRepairTest(parameterized.TestCase):

  def propose(self, strategy: str, program: str, mode: str = "program"):
    with ScriptedServer(responder=Roles(program)) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openai/scripted", api_base=server.api_base,
                                           timeout=10.0, retries=0))
      proposer = make_proposer(strategy, ProposerConfig(sar_output=mode), client, FACTORS)
      return proposer.propose(ParentInfo("p1", SEED, METRICS), ProposalHistory(),
                              np.random.default_rng(0))

  def test_the_fixture_drifts_outside_the_region(self):
    self.assertNotEqual(DRIFTED, CHILD)
    self.assertNotEmpty(regions.outside_scope_changes(SEED, DRIFTED, ["ACTION"]))

  @parameterized.parameters("spark", "asr_only")
  def test_whitespace_and_comment_drift_is_spliced_into_the_parent(self, strategy):
    proposal = self.propose(strategy, DRIFTED)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD)
    self.assertNotEmpty(proposal.decision["drift_repaired"])
    self.assertIn("Masked max entries", " ".join(proposal.decision["drift_repaired"]))
    judged = entanglement.judge(SEED, proposal.child_text, proposal.scope, True)
    self.assertFalse(judged.entangled)
    self.assertEqual(judged.outside_editable, ())

  def test_rc_sar_repairs_drift_outside_every_region(self):
    proposal = self.propose("rc_sar", DRIFTED)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD)
    self.assertIn("drift_repaired", proposal.decision)

  @parameterized.parameters("spark", "asr_only", "rc_sar")
  def test_a_code_change_outside_the_region_stays_entangled(self, strategy):
    proposal = self.propose(strategy, CODE_OUTSIDE)
    self.assertEqual(proposal.child_text, CODE_OUTSIDE)
    self.assertNotIn("drift_repaired", proposal.decision)
    judged = entanglement.judge(SEED, proposal.child_text, proposal.scope, True)
    self.assertTrue(judged.entangled)
    self.assertIn("BIG_NUMBER", " ".join(judged.outside_editable))

  def test_region_mode_has_nothing_to_repair(self):
    body = regions.get_region(CHILD, "ACTION")
    proposal = self.propose("spark", body, mode="region")
    self.assertEqual(proposal.child_text, CHILD)
    self.assertNotIn("drift_repaired", proposal.decision)


if __name__ == "__main__":
  absltest.main()
