"""Flag names shared with CLRS: our CLIs take over the absl flags CLRS defines at import.

``import clrs`` registers absl flags of CLRS's own scripts in the global
``FLAGS`` (``seeds`` among them, from ``clrs_text.generate_clrs_text``). A
CLI of ours that defines ``--seeds`` and later imports CLRS (to train) would
die with ``DuplicateFlagError``. Importing CLRS first and removing its unused
definitions of those names lets ``--seeds`` mean what our help says.
"""

from __future__ import annotations

from absl import flags


def take_over(*names: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Imports CLRS and deletes its definitions of ``names`` (other flags are left alone)."""
  import clrs  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # Defines them.

  for name in names:
    if name in flag_values:
      module = flag_values.find_module_defining_flag(name) or ""
      if module.startswith("clrs."):
        delattr(flag_values, name)


__all__ = ["take_over"]
