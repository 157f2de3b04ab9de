"""Search configuration: one dataclass, its absl flags, validation and config.flags.

Every knob of a search (SPEC §1, §5, §7) is a field of `SearchConfig`
with its help text in the field's metadata. The absl flags of
``python -m spark_clrs.search`` are generated from the fields, so the CLI,
the Python API (``spark_clrs.search(**overrides)``) and the run directory's
re-runnable ``config.flags`` can never disagree about names or defaults.

Fields marked ``run_defining`` fix what a run *is*: resuming a run directory
with a different value is refused (rundir.py). The others (iterations,
timeouts, output, ...) may change between invocations of the same run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from absl import flags

STRATEGIES = ("spark", "asr_only", "rc_sar", "openevolve", "evoprompting", "funsearch", "eoh",
              "mutation")
PROGRESS_MODES = ("auto", "bar", "notebook", "log", "none")
SCOPE_ROUTERS = ("all", "random", "bandit")
OPENEVOLVE_EDITS = ("diff", "rewrite")
BUDGETS = ("evaluations", "tokens", "cost")
SCORE_TEST = ("best", "all")
EXECUTORS = ("local", "ray")
_FACTOR_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OVERRIDE = re.compile(r"^[a-z_][a-z0-9_]*=.+$")


class ConfigError(ValueError):
  """A configuration value is invalid; the message is one line naming the fix."""


def _field(default: Any, help_text: str, *, choices: tuple[str, ...] | None = None,
           run_defining: bool = True, multi: bool = False) -> Any:
  return dataclasses.field(default=default, metadata={
      "help": help_text, "choices": choices, "run_defining": run_defining, "multi": multi})


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """All settings of one search run (defaults: the paper's DFS setting, SPEC §4)."""

  # What is searched and how.
  strategy: str = _field("spark", "Proposal strategy (SPEC §6); 'spark' = router + refiner + "
                         "scoped rewriter.", choices=STRATEGIES)
  iterations: int = _field(100, "Number of proposals (the seed evaluation is not counted). "
                           "May be raised when resuming.", run_defining=False)
  seed: int = _field(0, "Seeds everything: parent sampling, the proposer and, unless "
                     "--eval_seeds is set, model training.")
  output: str = _field("runs/search", "Run directory (SPEC §5). Re-running the same command on "
                       "it resumes.", run_defining=False)
  resume: bool = _field(True, "Resume the run in --output if there is one. With false, an "
                        "occupied --output is left untouched and a new directory name is "
                        "chosen and printed.", run_defining=False)
  seed_program: str = _field("triplet_gmpnn", "Seed program evaluated first as candidate 0: a "
                             "name under seeds/ or a path to a .py file.")
  factors: tuple[str, ...] = _field(("OPERATOR", "ACTION"), "Comma-separated factor regions "
                                    "the router may select (SPEC §2).")
  # Evaluation protocol.
  profile: str = _field("spark", "Evaluation profile (SPEC §4): spark, clrs or quick.")
  profile_overrides: tuple[str, ...] = _field((), "FIELD=VALUE override of the evaluation "
                                              "profile, e.g. --profile_overrides=train_steps=5; "
                                              "repeat the flag for several fields.", multi=True)
  eval_seeds: tuple[int, ...] = _field((), "Comma-separated training seeds per candidate (mean "
                                       "and std reported); empty = just --seed.")
  # Archive (SPEC §5).
  population_size: int = _field(100, "Most programs kept as potential parents across all "
                                "islands.")
  num_islands: int = _field(4, "Number of islands; parents of iteration k come from island "
                            "k mod num_islands.")
  archive_size: int = _field(20, "Size of the elite archive (best programs overall), the pool "
                             "of exploitation sampling.")
  migration_interval: int = _field(10, "Every this many iterations, each island's best "
                                   "programs migrate to the next island of the ring.")
  migration_rate: float = _field(0.1, "Fraction of an island's population (at least one "
                                 "program) that migrates.")
  exploration_ratio: float = _field(0.2, "Probability of drawing the parent uniformly from the "
                                    "island's MAP-Elites cells (diversity).")
  exploitation_ratio: float = _field(0.7, "Probability of drawing the parent uniformly from the "
                                     "elite archive.")
  elite_selection_ratio: float = _field(0.1, "Probability of taking the island's best program "
                                        "as parent. The three ratios must sum to 1.")
  feature_dims: tuple[str, ...] = _field(("macs", "param_count"), "Comma-separated metrics "
                                         "spanning the MAP-Elites grid.")
  feature_bins: int = _field(10, "Bins per MAP-Elites dimension (log scale, from 1/8x to 8x "
                             "the seed's value).")
  # Proposer (SPEC §1, §7).
  router_retries: int = _field(2, "Retries of an invalid router reply before the UCB bandit "
                               "picks the scope (recorded as fallback).")
  freeze_non_selected_region: bool = _field(True, "Reject a child that changes text outside "
                                            "its selected scope as 'entangled' before any "
                                            "compute.")
  feasibility_check: bool = _field(True, "Run the SPEC §3 checks (parse, policy, interface, "
                                   "shape, finite, budget) before training.")
  sar_output: str = _field("program", "Scoped rewriter output: the complete program (the "
                           "paper's mode) or only the region body.",
                           choices=("program", "region"))
  # Strategy ablation knobs and comparison settings.
  scope_router: str = _field("all", "rc_sar's scope: 'all' (every factor editable, no router: "
                             "the paper's RC+SAR ablation), 'random' (one factor drawn "
                             "uniformly) or 'bandit' (one factor by UCB over past gains); no "
                             "LLM decides the scope in any of them.", choices=SCOPE_ROUTERS)
  ucb_c: float = _field(1.0, "Exploration constant of the UCB bandit (the router's fallback "
                        "and --scope_router=bandit).")
  lineage_window: int = _field(8, "Lineage rows (recent attempts from the parent's ancestry) "
                               "shown to the router.")
  tried_window: int = _field(12, "Directives already tried in the scope shown to the refiner.")
  openevolve_edits: str = _field("diff", "OpenEvolve's edit format: SEARCH/REPLACE diffs "
                                 "(OpenEvolve's default) or a full rewrite of the program.",
                                 choices=OPENEVOLVE_EDITS)
  budget: str = _field("evaluations", "What the comparison budget counts: proposals "
                       "(evaluations, = --iterations), LLM tokens or LLM cost (USD). With "
                       "tokens or cost the run stops when the spend reaches --budget_amount "
                       "or after --iterations proposals, whichever comes first.",
                       choices=BUDGETS)
  budget_amount: float = _field(0.0, "The budget in --budget units (proposals, tokens or "
                                "USD); with --budget=evaluations it replaces --iterations; "
                                "0 = --iterations proposals.", run_defining=False)
  score_test: str = _field("best", "When OOD-test is scored: 'best' = only for candidates "
                           "that become best-so-far and for the final --test_top_k (their "
                           "saved parameters are reloaded; the saving is the test set's "
                           "prediction for every other candidate), 'all' = every candidate "
                           "(for studies of test vs selection accuracy).",
                           choices=SCORE_TEST, run_defining=False)
  test_top_k: int = _field(5, "With --score_test=best and --final_top_k=0: OOD-test is also "
                           "scored for this many fittest candidates when the search ends.",
                           run_defining=False)
  fitness_seeds: int = _field(0, "Train every candidate with K training seeds (--seed, "
                              "--seed+1, ...) and use the mean OOD-val accuracy over them as "
                              "the fitness (all scored on the same fixed evaluation sets); "
                              "0 = --eval_seeds, else --seed alone.")
  seed_program_seeds: int = _field(3, "Training seeds of the seed program (candidate 0): the "
                                   "candidates' seeds, then the next integers up to this many. "
                                   "Their spread is the training-seed term of every "
                                   "single-seed fitness's 95% interval and of the paired "
                                   "decisions; 1 = the graph term only.")
  final_top_k: int = _field(3, "At the end of a run, re-train the best so far and the "
                            "fittest candidates, this many in all, with --final_seeds fresh "
                            "training seeds never used in the search, and score OOD-val and "
                            "OOD-test: summary.json's 'final', the run's reported result; "
                            "0 = no final re-evaluation.", run_defining=False)
  final_seeds: int = _field(3, "Fresh training seeds of each final re-evaluation "
                            "(--final_top_k).", run_defining=False)
  llm_model: str = _field("", "LiteLLM model, e.g. openai/gpt-4o-mini or ollama/qwen2.5-coder; "
                          "empty = the built-in offline proposer spark/offline.")
  llm_api_base: str = _field("", "Base URL of the LLM endpoint (e.g. a local vLLM or Ollama "
                             "server); empty = the provider's default.", run_defining=False)
  llm_temperature: float = _field(0.7, "Sampling temperature of every LLM call.")
  llm_timeout: float = _field(120.0, "Deadline of one LLM request in seconds, however slowly "
                              "the server sends (raise it for slow or reasoning models).",
                              run_defining=False)
  llm_retries: int = _field(3, "Retries of a failed LLM request (rate limits, 5xx), with "
                            "exponential backoff.", run_defining=False)
  # Real LLM providers.
  llm_max_tokens: int = _field(0, "Reply length cap of one LLM request (a whole program is "
                               "about 2.5k tokens); a reply cut by it is continued before it "
                               "is rejected; 0 = what the model can return (LiteLLM's table "
                               "or --llm_prices), at most 8192.", run_defining=False)
  llm_max_input_tokens: int = _field(0, "Input window of the model in tokens, for local or "
                                     "unknown models (0 = LiteLLM's model info); prompts are "
                                     "shrunk to fit it.", run_defining=False)
  llm_max_consecutive_failures: int = _field(3, "LLM calls in a row that end in a provider "
                                             "failure (connection, 5xx, rate limit, timeout, "
                                             "each after --llm_retries) before the run stops; "
                                             "a bad key or unknown model stops it at once.",
                                             run_defining=False)
  llm_backoff_s: float = _field(2.0, "First backoff before retrying a failed LLM request; "
                                "doubles with each attempt (at most 60 s).", run_defining=False)
  router_model: str = _field("", "Model of the scope router (one LiteLLM name or a weighted "
                             "mixture a:0.7,b:0.3); empty = --llm_models, else --llm_model.")
  refiner_model: str = _field("", "Model of the refinement controller; empty = --llm_models, "
                              "else --llm_model.")
  rewriter_model: str = _field("", "Model of the rewriter and of every code-writing role of "
                               "the baseline strategies; empty = --llm_models, else "
                               "--llm_model.")
  llm_models: str = _field("", "Weighted model mixture for every role without its own model, "
                           "e.g. openai/gpt-4o-mini:0.7,deepseek/deepseek-chat:0.3; each call "
                           "draws one (seeded by --seed) and records it.")
  max_cost_usd: float = _field(0.0, "Stop proposing once the run's LLM calls cost this much "
                               "(USD; 0 = no limit); running evaluations finish and a resume "
                               "with a larger limit continues.", run_defining=False)
  max_llm_tokens: int = _field(0, "Stop proposing once the run's LLM calls used this many "
                               "tokens (prompt + completion; 0 = no limit).", run_defining=False)
  llm_price_per_mtok: tuple[float, ...] = _field((), "IN,OUT: USD per million prompt and "
                                                 "completion tokens for models with no known "
                                                 "price (local servers, new models); 0,0 = "
                                                 "free.", run_defining=False)
  llm_prices: str = _field("", "JSON file in LiteLLM's model-table shape "
                           "(model_prices_and_context_window.json) whose entries replace the "
                           "bundled table's prices and limits.", run_defining=False)
  llm_api_key_env: str = _field("", "Environment variable whose value is sent as the API key "
                                "to --llm_api_base; without it a custom --llm_api_base gets no "
                                "provider key.", run_defining=False)
  llm_rpm: int = _field(0, "At most this many LLM requests per minute, all roles together "
                        "(0 = no limit).", run_defining=False)
  llm_tpm: int = _field(0, "At most this many LLM tokens per minute (prompt + reply cap), "
                        "all roles together (0 = no limit).", run_defining=False)
  llm_extra_body: str = _field("", "JSON object passed to the provider with every LLM "
                               "request, e.g. '{\"options\": {\"num_ctx\": 32768}}' for "
                               "Ollama.", run_defining=False)
  # Budget caps of the feasibility checks.
  budget_factor: float = _field(4.0, "Default parameter and MAC caps as a multiple of the seed "
                                "program's processor.")
  max_param_count: int = _field(0, "Processor parameter cap; 0 = budget_factor x the seed's.")
  max_macs: int = _field(0, "Processor MACs cap (one step, one graph); 0 = budget_factor x the "
                         "seed's.")
  # Resources of the sandboxed children.
  eval_timeout_s: float = _field(3600.0, "Wall-clock limit of one candidate's training + "
                                 "evaluation.", run_defining=False)
  eval_memory_mb: int = _field(0, "Memory limit of one candidate's training child (MB); 0 = "
                               "what this machine has available at the start, less 2 GiB "
                               "for the search, divided by --parallel_evaluations.",
                               run_defining=False)
  check_timeout_s: float = _field(120.0, "Wall-clock limit of one candidate's feasibility "
                                  "checks.", run_defining=False)
  check_memory_mb: int = _field(8192, "Memory limit of the feasibility-check child (MB).",
                                run_defining=False)
  eval_timeout_factor: float = _field(4.0, "A candidate's evaluation timeout is this x the "
                                      "seed's measured evaluation wall time under the same "
                                      "profile (at least --eval_timeout_floor_s, at most "
                                      "--eval_timeout_s, which also limits the seed); 0 = "
                                      "always --eval_timeout_s.", run_defining=False)
  eval_timeout_floor_s: float = _field(120.0, "Smallest candidate evaluation timeout when it "
                                       "is relative to the seed (--eval_timeout_factor).",
                                       run_defining=False)
  sandbox: str = _field("bwrap", "Isolation of every process that runs candidate code: "
                        "'bwrap' (the bubblewrap jail: own user/PID/network/IPC/mount "
                        "namespaces, read-only host, no network, uid 65534; the search "
                        "refuses to start where it cannot be created) or 'none' (explicit "
                        "opt-in: only the process limits; logged and kept in config.flags).",
                        choices=("bwrap", "none"), run_defining=False)
  parallel_evaluations: int = _field(1, "Candidates evaluated at the same time (local slots, "
                                     "one device each, or Ray tasks in flight). Asynchronous "
                                     "unless --synchronous: a new proposal is made while the "
                                     "others train.", run_defining=False)
  synchronous: bool = _field(False, "With --parallel_evaluations=N > 1: run in generations of "
                             "N proposals made from the same archive state and archived in "
                             "iteration order, so the same --seed and N give the same "
                             "candidates whatever order the evaluations finish in.",
                             run_defining=False)
  executor: str = _field("local", "Where evaluations run: 'local' (jailed pre-started workers "
                         "on this machine, --parallel_evaluations at a time) or 'ray' (one Ray task per "
                         "evaluation, one GPU each when the cluster has GPUs; needs "
                         "pip install -e .[ray]).", choices=EXECUTORS, run_defining=False)
  ray_address: str = _field("", "Ray cluster for --executor=ray: HOST:PORT, ray://HOST:PORT or "
                            "auto; empty = the Ray instance this process started, else a new "
                            "local one.", run_defining=False)
  ray_cpus_per_evaluation: int = _field(1, "CPUs each Ray evaluation task requests when the "
                                        "cluster has no GPU.", run_defining=False)
  compilation_cache: bool = _field(True, "Persistent JAX compilation cache for evaluations, in "
                                   "RUN/cache/jax ($JAX_COMPILATION_CACHE_DIR when set): a "
                                   "computation compiled before skips XLA's backend compile. "
                                   "Used only with --sandbox=none: the jail never shares a "
                                   "cache between candidates (one could plant executables "
                                   "for the next).",
                                   run_defining=False)
  progress: str = _field("auto", "Progress display (tqdm): a live bar on a terminal (auto, "
                         "bar), a widget in Jupyter (auto, notebook), one log line per "
                         "candidate (log; auto when not a TTY), or nothing (none).",
                         choices=PROGRESS_MODES, run_defining=False)

  def __post_init__(self):
    validate(self)
    if self.budget == "evaluations" and self.budget_amount:  # The budget is the proposals.
      object.__setattr__(self, "iterations", int(self.budget_amount))

  @property
  def training_seeds(self) -> tuple[int, ...]:
    """Training seeds of every candidate (common to all candidates, so fitness is comparable)."""
    if self.eval_seeds:
      return self.eval_seeds
    return tuple(range(self.seed, self.seed + max(1, self.fitness_seeds)))

  def replace(self, **changes: Any) -> SearchConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

  def to_flags(self) -> str:
    """The config as an absl flagfile: ``--flagfile=`` on it re-runs (resumes) the search."""
    lines = ["# spark_clrs search configuration (resolved flags).",
             "# Re-run or resume with: python -m spark_clrs.search --flagfile=<this file>"]
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.metadata["multi"]:
        lines.extend(f"--{f.name}={v}" for v in value)
        if not value:
          lines.append(f"# --{f.name}= (not set)")
      else:
        lines.append(f"--{f.name}={_flag_text(value)}")
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
  return list(value) if isinstance(value, tuple) else value


def _flag_text(value: Any) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, tuple):
    return ",".join(str(v) for v in value)
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _fail(message: str) -> None:
  raise ConfigError(message)


def validate(config: SearchConfig) -> None:
  """Raises ConfigError (one line, naming the flag and the fix) on an invalid value."""
  for f in dataclasses.fields(config):
    choices = f.metadata["choices"]
    value = getattr(config, f.name)
    if choices and value not in choices:
      _fail(f"--{f.name}={value!r} is not one of {', '.join(choices)}")
  positive = ("population_size", "num_islands", "archive_size", "migration_interval",
              "feature_bins", "parallel_evaluations", "ray_cpus_per_evaluation",
              "seed_program_seeds", "final_seeds")
  for name in positive:
    if getattr(config, name) < 1:
      _fail(f"--{name}={getattr(config, name)} must be at least 1")
  non_negative = ("iterations", "router_retries", "llm_retries", "max_param_count", "max_macs")
  for name in non_negative:
    if getattr(config, name) < 0:
      _fail(f"--{name}={getattr(config, name)} must be 0 or more")
  for name in ("lineage_window", "tried_window", "fitness_seeds", "test_top_k", "final_top_k"):
    if getattr(config, name) < 0:
      _fail(f"--{name}={getattr(config, name)} must be 0 or more")
  if config.ucb_c < 0:
    _fail(f"--ucb_c={config.ucb_c} must be 0 or more")
  if config.fitness_seeds and config.eval_seeds:
    _fail(f"--fitness_seeds={config.fitness_seeds} and --eval_seeds="
          f"{','.join(map(str, config.eval_seeds))} both set the training seeds; keep one")
  if config.budget_amount < 0 or (config.budget != "evaluations" and not config.budget_amount):
    _fail(f"--budget={config.budget} needs --budget_amount > 0 (tokens or USD), got "
          f"{config.budget_amount:g}")
  if config.budget == "evaluations" and config.budget_amount and (
      config.budget_amount != int(config.budget_amount)):
    _fail(f"--budget_amount={config.budget_amount:g} must be a whole number of proposals "
          "with --budget=evaluations")
  if config.eval_memory_mb < 0:
    _fail(f"--eval_memory_mb={config.eval_memory_mb} must be 0 (from the machine) or more")
  for name in ("eval_timeout_s", "check_timeout_s", "llm_timeout", "budget_factor",
               "check_memory_mb"):
    if not getattr(config, name) > 0:
      _fail(f"--{name}={getattr(config, name)} must be greater than 0")
  if config.eval_timeout_factor < 0 or config.eval_timeout_floor_s <= 0:
    _fail(f"--eval_timeout_factor={config.eval_timeout_factor:g} must be >= 0 and "
          f"--eval_timeout_floor_s={config.eval_timeout_floor_s:g} greater than 0")
  if config.num_islands > config.population_size:
    _fail(f"--num_islands={config.num_islands} exceeds --population_size="
          f"{config.population_size}; every island needs room for at least one program")
  ratios = ("exploration_ratio", "exploitation_ratio", "elite_selection_ratio")
  for name in ratios:
    if not 0.0 <= getattr(config, name) <= 1.0:
      _fail(f"--{name}={getattr(config, name)} must lie in [0, 1]")
  total = sum(getattr(config, name) for name in ratios)
  if not math.isclose(total, 1.0, abs_tol=1e-6):
    _fail(f"--exploration_ratio + --exploitation_ratio + --elite_selection_ratio = {total:g}; "
          "they must sum to 1")
  if not 0.0 <= config.migration_rate <= 1.0:
    _fail(f"--migration_rate={config.migration_rate} must lie in [0, 1]")
  if not 0.0 <= config.llm_temperature <= 2.0:
    _fail(f"--llm_temperature={config.llm_temperature} must lie in [0, 2]")
  if config.llm_max_consecutive_failures < 1:
    _fail(f"--llm_max_consecutive_failures={config.llm_max_consecutive_failures} must be at "
          "least 1")
  for name in ("llm_max_tokens", "llm_max_input_tokens", "max_cost_usd", "max_llm_tokens",
               "llm_backoff_s", "llm_rpm", "llm_tpm"):
    if getattr(config, name) < 0:
      _fail(f"--{name}={getattr(config, name)} must be 0 or more")
  for name in ("llm_model", "router_model", "refiner_model", "rewriter_model", "llm_models"):
    try:
      parse_model_spec(getattr(config, name))
    except ValueError as e:
      _fail(f"--{name}={getattr(config, name)!r}: {e}")
  if len(config.llm_price_per_mtok) not in (0, 2) or any(
      p < 0 for p in config.llm_price_per_mtok):
    _fail(f"--llm_price_per_mtok={_flag_text(config.llm_price_per_mtok)} must be IN,OUT: two "
          "non-negative USD prices per million tokens, e.g. 0.15,0.6")
  _validate_llm_text(config)
  if not config.factors:
    _fail("--factors is empty; name at least one factor region, e.g. --factors=OPERATOR,ACTION")
  for factor in config.factors:
    if not _FACTOR_NAME.match(factor):
      _fail(f"--factors: {factor!r} is not a factor name; use capitals as in the region markers "
            "(e.g. OPERATOR)")
  if len(set(config.factors)) != len(config.factors):
    _fail(f"--factors={','.join(config.factors)} names a factor twice")
  if not config.feature_dims:
    _fail("--feature_dims is empty; name at least one metric, e.g. --feature_dims=macs")
  for override in config.profile_overrides:
    if not _OVERRIDE.match(override):
      _fail(f"--profile_overrides={override!r} is not FIELD=VALUE (e.g. train_steps=5)")
  if not config.output:
    _fail("--output is empty; name a run directory, e.g. --output=runs/dfs")
  if not config.seed_program:
    _fail("--seed_program is empty; use triplet_gmpnn or a path to a .py program")


def _validate_llm_text(config: SearchConfig) -> None:
  if config.llm_extra_body:
    try:
      body = json.loads(config.llm_extra_body)
    except ValueError as e:
      body = e
    if not isinstance(body, dict):
      _fail(f"--llm_extra_body={config.llm_extra_body!r} is not a JSON object; write e.g. "
            "'{\"options\": {\"num_ctx\": 32768}}'")
  if config.llm_api_key_env and not _ENV_NAME.match(config.llm_api_key_env):
    _fail(f"--llm_api_key_env={config.llm_api_key_env!r} must name an environment variable "
          "(e.g. MY_SERVER_KEY), not hold the key itself")


def parse_model_spec(spec: str) -> tuple[tuple[str, float], ...]:
  """``(model, weight)`` pairs of a model flag: one name, or ``name:weight,name:weight``.

  One name is taken verbatim (Ollama tags such as ``qwen2.5-coder:32b`` contain colons);
  in a mixture every item ends with ``:weight`` (a number > 0). ``""`` gives ``()``.

  Raises:
    ValueError: a mixture item without a positive weight, or a model named twice.
  """
  items = [item.strip() for item in spec.split(",") if item.strip()]
  if len(items) <= 1:
    return tuple((item, 1.0) for item in items)
  pairs = []
  for item in items:
    name, _, weight = item.rpartition(":")
    try:
      value = float(weight)
    except ValueError:
      value = float("nan")
    if not name or not math.isfinite(value) or value <= 0:
      raise ValueError(f"mixture item {item!r} needs a positive weight, e.g. "
                       "openai/gpt-4o-mini:0.7,deepseek/deepseek-chat:0.3")
    pairs.append((name, value))
  names = [n for n, _ in pairs]
  if len(set(names)) != len(names):
    raise ValueError("a model is named twice in the mixture")
  return tuple(pairs)


def _resolved_types() -> dict[str, Any]:
  return typing.get_type_hints(SearchConfig)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one absl flag per SearchConfig field (idempotent per FlagValues)."""
  types = _resolved_types()
  for f in dataclasses.fields(SearchConfig):
    if f.name in flag_values:
      continue
    kind, help_text, default = types[f.name], f.metadata["help"], f.default
    kwargs = {"flag_values": flag_values}
    if f.metadata["choices"]:
      flags.DEFINE_enum(f.name, default, f.metadata["choices"], help_text, **kwargs)
    elif f.metadata["multi"]:
      flags.DEFINE_multi_string(f.name, list(default), help_text, **kwargs)
    elif kind is bool:
      flags.DEFINE_boolean(f.name, default, help_text, **kwargs)
    elif kind is int:
      flags.DEFINE_integer(f.name, default, help_text, **kwargs)
    elif kind is float:
      flags.DEFINE_float(f.name, default, help_text, **kwargs)
    elif kind is str:
      flags.DEFINE_string(f.name, default, help_text, **kwargs)
    else:  # tuple[str, ...] or tuple[int, ...]
      flags.DEFINE_list(f.name, [str(v) for v in default], help_text, **kwargs)


def _convert(name: str, kind: Any, value: Any) -> Any:
  """Converts a flag or keyword value to the field's type (lists become tuples)."""
  if typing.get_origin(kind) is tuple:
    (item_type, _) = typing.get_args(kind)
    if isinstance(value, str):
      value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, Iterable):
      _fail(f"--{name} expects a comma-separated list, got {value!r}")
    try:
      return tuple(item_type(v.strip() if isinstance(v, str) else v) for v in value)
    except ValueError:
      _fail(f"--{name}={value!r}: every item must be {item_type.__name__}")
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if kind is bool and not isinstance(value, bool):
    _fail(f"--{name} expects true or false, got {value!r}")
  if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
    _fail(f"--{name} expects an integer, got {value!r}")
  if kind is str and not isinstance(value, str):
    _fail(f"--{name} expects a string, got {value!r}")
  return value


def from_mapping(values: Mapping[str, Any], base: SearchConfig | None = None) -> SearchConfig:
  """Builds a config from keyword values (unknown names raise ConfigError)."""
  types = _resolved_types()
  unknown = sorted(set(values) - set(types))
  if unknown:
    names = ", ".join(sorted(types))
    _fail(f"unknown setting(s) {', '.join(unknown)}; valid names: {names}")
  changes = {name: _convert(name, types[name], value) for name, value in values.items()}
  return dataclasses.replace(base or SearchConfig(), **changes)


def from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> SearchConfig:
  """Builds a config from parsed absl flags."""
  return from_mapping({f.name: flag_values[f.name].value for f in dataclasses.fields(SearchConfig)})


def parse_flagfile(path: str, extra_argv: Iterable[str] = ()) -> SearchConfig:
  """Reads an absl flagfile (nested --flagfile= lines resolve from the working directory)."""
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  try:
    flag_values(["spark_clrs.search", f"--flagfile={path}", *extra_argv])
  except flags.Error as e:
    _fail(f"cannot read flags from {path}: {e}")
  return from_flags(flag_values)


def _shown(value: Any) -> str:
  text = _flag_text(value)
  return text if text else "(empty)"


def run_defining_differences(old: SearchConfig, new: SearchConfig) -> list[str]:
  """Run-defining fields that differ, as '--name (old in the run, new now)' strings."""
  return [f"--{f.name} ({_shown(getattr(old, f.name))} in the run, "
          f"{_shown(getattr(new, f.name))} now)"
          for f in dataclasses.fields(SearchConfig)
          if f.metadata["run_defining"] and getattr(old, f.name) != getattr(new, f.name)]


def other_differences(old: SearchConfig, new: SearchConfig) -> list[str]:
  """Fields that may change between invocations of one run and did."""
  return [f"--{f.name}: {_shown(getattr(old, f.name))} -> {_shown(getattr(new, f.name))}"
          for f in dataclasses.fields(SearchConfig)
          if not f.metadata["run_defining"] and getattr(old, f.name) != getattr(new, f.name)]

