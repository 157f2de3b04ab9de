"""The environment a jailed child gets: an allow-list, never a secret.

Keeps harmless settings (PATH, locale, JAX/XLA/CUDA/BLAS knobs, PYTHONPATH) minus anything
that looks like a key, token, secret, password, proxy or cloud credential; points HOME at
the child's workdir and TMPDIR at the jail's private ``/tmp``; puts the project root on
PYTHONPATH so the child can import us.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]
BWRAP_VAR = "SPARK_CLRS_BWRAP"  # Configures the parent's jail; never passed to a child.
JAX_CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"

_KEEP_VARS = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONHASHSEED", "PYTHONWARNINGS",
    "PYTHONUNBUFFERED", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
})
_KEEP_PREFIXES = ("LC_", "JAX_", "XLA_", "CUDA_", "NVIDIA_", "ROCR_", "HIP_", "TPU_",
                  "OMP_", "MKL_", "OPENBLAS_", "SPARK_CLRS_")
_SECRET_WORDS = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|PROXY|COOKIE|SESSION", re.IGNORECASE)
_CLOUD_PREFIXES = ("AWS_", "GOOGLE_", "GCLOUD_", "GCP_", "CLOUDSDK_", "AZURE_", "OPENAI_",
                   "ANTHROPIC_", "GEMINI_", "HF_", "HUGGING", "LITELLM_", "COHERE_",
                   "MISTRAL_", "GROQ_", "TOGETHER", "DEEPSEEK_", "OPENROUTER_", "XAI_")
_PARENT_ONLY = frozenset({BWRAP_VAR})


def is_secret_var(name: str) -> bool:
  """True for variables a candidate must never see (keys, tokens, proxies, cloud creds)."""
  upper = name.upper()
  return bool(_SECRET_WORDS.search(upper)) or upper.startswith(_CLOUD_PREFIXES)


def scrubbed_env(*, home: pathlib.Path, environ: Mapping[str, str] | None = None,
                 extra: Mapping[str, str] | None = None,
                 tmpdir: str | None = None) -> dict[str, str]:
  """The environment of a sandboxed child (module docstring); TMPDIR defaults to
  ``home/tmp``. Raises ValueError for a secret-looking name in ``extra``."""
  source = os.environ if environ is None else environ
  env = {k: v for k, v in source.items()
         if (k in _KEEP_VARS or k.startswith(_KEEP_PREFIXES)) and not is_secret_var(k)
         and k not in _PARENT_ONLY}
  for k, v in (extra or {}).items():
    if is_secret_var(k):
      raise ValueError(f"refusing to pass {k!r} into the sandbox: it looks like a secret")
    env[k] = v
  paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
  env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
  env["HOME"] = str(home)
  env["TMPDIR"] = tmpdir or str(home / "tmp")
  env["PYTHONNOUSERSITE"] = "1"
  env["PYTHONDONTWRITEBYTECODE"] = "1"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


def child_env(home: pathlib.Path, extra: Mapping[str, str] | None,
              jailed: bool) -> dict[str, str]:
  """:func:`scrubbed_env` for a child whose HOME is ``home``: in the jail TMPDIR is its
  private ``/tmp`` and a JAX compilation cache outside ``home`` is dropped (a cache shared
  by candidates would let one plant executables for the next)."""
  if not jailed:
    return scrubbed_env(home=home, extra=extra)
  env = scrubbed_env(home=home, extra=extra, tmpdir="/tmp")
  cache = env.get(JAX_CACHE_VAR)
  if cache:
    real, own = os.path.realpath(cache), str(home)
    if real != own and not real.startswith(own + os.sep):
      del env[JAX_CACHE_VAR]
  return env
