"""Program text: factor regions, identity up to formatting, entanglement, SEARCH/REPLACE diffs."""
