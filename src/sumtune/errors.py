"""The two errors an entry point turns into one `error:` line (sumtune.cli.run); a module of its own so that every
module can raise them without importing the configuration schema."""


class ConfigError(ValueError):
    """A user-facing configuration or input problem: the message names the problem and the fix."""


class RunError(RuntimeError):
    """A run that cannot go on (a non-finite loss): the message names the step, the last checkpoint and the fix."""
