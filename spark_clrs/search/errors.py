"""The search's own error: raised where the run cannot go on, caught by the CLI and the API."""


class SearchError(RuntimeError):
  """The search cannot go on (e.g. the seed program fails); the message says why."""
