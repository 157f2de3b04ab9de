"""One self-contained HTML page from a dict of data: encoding, the page, the atomic write.

The page opens from ``file://`` with no network: its style and script ship in this
package (``viewer.css``; the script's parts, :data:`SCRIPTS`) and are inlined, and every
datum travels as JSON in a ``<script type="application/json">`` element. Programs and LLM
text are untrusted; two rules keep them inert:

* the JSON is escaped so that no ``<``, ``>``, ``&``, U+2028 or U+2029 survives
  literally (`safe_json`), hence ``</script>`` inside a reply cannot end the
  data element;
* the page's script inserts data into the DOM only as text (``textContent``,
  ``createTextNode``), never as markup.

This module knows nothing of runs or reports: it renders whatever data it is given.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import importlib.resources
import json
import math
import pathlib
from typing import Any

from spark_clrs.search.rundir import write_atomic

PAGE_NAME = "index.html"
# The page's script, in this order, inlined inside one strict-mode function.
SCRIPTS = ("viewer.js", "run_page.js", "compare_page.js", "main.js")
# Characters that must not appear literally inside a <script> element's JSON.
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
            "\u2029": "\\u2029"}


def _clean(value: Any) -> Any:
  """JSON-able data with non-finite floats as None (JSON.parse rejects NaN)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if value is None or isinstance(value, (str, int, bool)):
    return value
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _clean(dataclasses.asdict(value))
  if hasattr(value, "tolist"):
    return _clean(value.tolist())
  return str(value)


def generated_at() -> str:
  """The time a page's data was made, as the pages show it (UTC)."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def safe_json(data: Any) -> str:
  """JSON text that is inert inside an HTML ``<script>`` element.

  ``<``, ``>``, ``&``, U+2028 and U+2029 only occur inside JSON strings, where their
  ``\\uXXXX`` escapes decode to the same characters, so ``JSON.parse`` gives back
  exactly ``data`` while the HTML parser never sees ``</script>`` or ``<!--``.
  """
  text = json.dumps(_clean(data), ensure_ascii=False, allow_nan=False, sort_keys=True,
                    separators=(",", ":"))
  for char, escape in _ESCAPES.items():
    text = text.replace(char, escape)
  return text


def _asset(name: str) -> str:
  package = __package__ or "spark_clrs.analysis.viewer"
  return importlib.resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _script() -> str:
  """The page's script: the parts of SCRIPTS in one function, so they share its scope."""
  return ("(function () {\n\"use strict\";\n" + "".join(_asset(name) for name in SCRIPTS)
          + "})();\n")


def render(data: dict[str, Any], title: str, *, refresh_s: int | None = None) -> str:
  """The whole page: inline style, the data element, inline script.

  Args:
    data: the page's data (``kind`` "run" or "compare" picks the layout).
    title: the document title (escaped here).
    refresh_s: while a search runs, the page reloads itself every this many seconds.
  """
  refresh = (f'<meta http-equiv="refresh" content="{int(refresh_s)}">\n'
             if refresh_s else "")
  return (
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      # No network, ever: only inline script/style and data: images may load.
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
      f"{refresh}<title>{html.escape(title)}</title>\n"
      f"<style>\n{_asset('viewer.css')}</style>\n</head>\n<body>\n"
      "<noscript>This page draws its tables and plots with JavaScript; the same data is in "
      "summary.json and archive.sqlite.</noscript>\n<div id=\"app\"></div>\n"
      f"<script type=\"application/json\" id=\"spark-data\">{safe_json(data)}</script>\n"
      f"<script>\n{_script()}</script>\n</body>\n</html>\n")


def write_page(path: str | pathlib.Path, data: dict[str, Any], title: str, *,
               refresh_s: int | None = None) -> pathlib.Path:
  """Renders the page and replaces ``path`` atomically (a reader never sees half a page)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, render(data, title, refresh_s=refresh_s))
  return path


__all__ = ["PAGE_NAME", "generated_at", "render", "safe_json", "write_page"]
