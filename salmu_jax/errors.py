"""User-facing errors: one line that names the offending value and what to do.

Entry points catch `SalmuError` and print its message instead of a traceback.
"""


class SalmuError(ValueError):
  """Base class of every error caused by bad user input."""


class ConfigError(SalmuError):
  """A config value is unknown, has the wrong type or is impossible."""


class DatasetError(SalmuError):
  """A dataset directory is missing, incomplete, corrupted or mismatched."""
