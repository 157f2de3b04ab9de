"""Stand-in for tensorflow_datasets where it cannot be installed (see ../tensorflow).

dm-clrs 2.0.3 defines its downloadable dataset as a ``tfds`` builder when it is imported;
spark_clrs never loads that dataset. This module defines the names used at import time
(``core.BuilderConfig``, ``core.GeneratorBasedBuilder``, ``core.Version``,
``core.DatasetInfo``, ``download.DownloadManager``); ``load`` and anything else raise.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any


@dataclasses.dataclass
class BuilderConfig:
  """Fields of tfds' BuilderConfig that a subclass may pass by keyword."""

  name: str = ""
  version: Any = None
  release_notes: Any = None
  supported_versions: Any = ()
  description: str | None = None


class GeneratorBasedBuilder:
  """Base class of dm-clrs' dataset builder; never instantiated here."""


class DatasetInfo:
  """Only named in annotations at import time."""


class DownloadManager:
  """Only named in annotations at import time."""


core = types.SimpleNamespace(BuilderConfig=BuilderConfig,
                             GeneratorBasedBuilder=GeneratorBasedBuilder,
                             Version=str, DatasetInfo=DatasetInfo)
download = types.SimpleNamespace(DownloadManager=DownloadManager)


def load(*args: Any, **kwargs: Any) -> Any:
  del args, kwargs
  raise RuntimeError("tensorflow_datasets is not installed here (offline stand-in of "
                     "benchmarks/gpu_candidate.sh): the CLRS dataset cannot be loaded; "
                     "spark_clrs samples its data on the fly instead")


def __getattr__(name: str) -> Any:
  raise AttributeError(f"tensorflow_datasets.{name}: not installed here (offline stand-in "
                       "of benchmarks/gpu_candidate.sh)")
