"""The one error tree: every error tbg reports to a user, each rendered as one line naming the file/row/field.

The CLI catches :class:`TbgError` once and prints it (exit 2); anything else is a bug and keeps its traceback.
"""


class TbgError(Exception):
    """Base of every error the CLI prints as a one-line message instead of a traceback."""


class ConfigError(TbgError, ValueError):
    """An invalid config: the message names the file and the dotted key (a ValueError for callers that parse)."""


class InputError(TbgError):
    """Bad source data: malformed rows, unknown relations/entities, ids out of range, NaN weights."""


class GraphError(TbgError):
    """A missing, incomplete or unreadable graph dir."""


class CheckpointError(TbgError):
    """A missing, corrupt or unreadable checkpoint."""


class ConsistencyError(TbgError):
    """A graph dir or checkpoint that does not fit the config (or each other); names the config key and the file."""


class ExportError(TbgError):
    """The export output exists (without --overwrite) or cannot be written."""


class SynthError(TbgError):
    """The sample-graph generator cannot produce what was asked."""


class QueryError(TbgError):
    """A query names an unknown entity type, entity or relation, or asks for an impossible answer."""


class LockedError(TbgError):
    """Another process is writing the directory (a second train/import/export); names the holder's pid/host."""


class NonFiniteError(TbgError):
    """A non-finite loss or parameter stopped training (names the step and the table); readers that find
    non-finite values in a checkpoint raise CheckpointError."""
