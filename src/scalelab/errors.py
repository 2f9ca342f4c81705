"""User-facing errors.

Every mistake a user can make (a bad config value, a missing file, a corrupt shard, a bad table)
raises `UserError`; the CLI prints its message as one line and exits with code 2, no traceback.
"""

import re

# numpy's scalar reprs (numpy >= 2: "np.float64(nan)") as the plain numbers a user typed
_NUMPY_REPR = re.compile(r"np\.(?:float|int|uint|bool_?)\d*\(([^()]*)\)")


class UserError(Exception):
    """A problem with the user's input. The message names the field and the fix.

    ``arg``: the argument or setting the message starts with (e.g. "mfu"), named as the library
    knows it; the CLI rewrites it as the flag that sets it ("--mfu", or "--set digits" for a lab)."""

    exit_code = 2

    def __init__(self, message: str, arg: str | None = None):
        super().__init__(_NUMPY_REPR.sub(r"\1", message))
        self.arg = arg


class Diverged(Exception):
    """Training produced a non-finite or exploding loss; the last good checkpoint is kept."""

    exit_code = 3
