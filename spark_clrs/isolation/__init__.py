"""The OS jail and everything that crosses its boundary (candidate code runs only here)."""
