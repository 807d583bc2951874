"""Errors that name what went wrong, where, and what was expected."""


class BiotpError(Exception):
    """Base class of every error biotp raises on bad input or failed runs."""


class ConfigError(BiotpError):
    """A circuit or protocol file is malformed: names the file, key path, value, expectation."""


class DataError(BiotpError):
    """A dataset is missing or corrupt: names the directory, the files and the fix."""


class DivergenceError(BiotpError):
    """Training produced NaN or inf: names the layer and the step."""


class RunFileError(BiotpError):
    """A run file is missing, foreign or of the wrong kind for the task: names the file,
    the key, what it holds and what was expected."""
