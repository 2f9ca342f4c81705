"""User-facing errors.

Every mistake a user can make (a bad config value, a missing file, a corrupt shard, a bad table)
raises `UserError`; the CLI prints its message as one line and exits with code 2, no traceback.
"""


class UserError(Exception):
    """A problem with the user's input. The message names the field and the fix."""

    exit_code = 2


class Diverged(Exception):
    """Training produced a non-finite or exploding loss; the last good checkpoint is kept."""

    exit_code = 3
