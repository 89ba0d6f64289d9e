"""User-facing errors: each renders as one line naming the file/row/field at fault."""


class TbgError(Exception):
    """Base of every error the CLI prints as a one-line message instead of a traceback."""


class InputError(TbgError):
    """Bad source data: malformed rows, unknown relations/entities, ids out of range, NaN weights."""


class CheckpointError(TbgError):
    """Missing, corrupt or config-incompatible checkpoint."""


class QueryError(TbgError):
    """A query names an unknown entity type, entity or relation, or asks for an impossible answer."""
