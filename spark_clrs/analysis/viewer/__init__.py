"""A run (or a comparison) as one self-contained HTML page: ``RUN/results/index.html``.

``page`` renders any page data into HTML that opens from ``file://`` with no network
and keeps untrusted text inert; ``run_page`` builds a run page's data from the rows the
caller hands over (the search's refresh callback, or report.py); the comparison page's
data is built by :mod:`spark_clrs.analysis.compare_page` from a report. The viewer never
reads an archive and never imports the report or the search loop.
"""

from spark_clrs.analysis.viewer.page import PAGE_NAME, render, safe_json, write_page
from spark_clrs.analysis.viewer.run_page import (
    REFRESH_COST_FACTOR,
    REFRESH_S,
    page_path,
    run_data,
    run_title,
    write_run_page,
)

__all__ = ["PAGE_NAME", "REFRESH_COST_FACTOR", "REFRESH_S", "page_path", "render", "run_data",
           "run_title", "safe_json", "write_page", "write_run_page"]
