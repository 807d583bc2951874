"""The error types (defined in `biotp.config.errors`; kept here for `from biotp.errors import ...`)."""

from .config.errors import BiotpError, ConfigError, DataError, DivergenceError, RunFileError

__all__ = ["BiotpError", "ConfigError", "DataError", "DivergenceError", "RunFileError"]
