"""Reading finished runs: tables, plots, reports, strategy comparison, transfer, the viewer."""
