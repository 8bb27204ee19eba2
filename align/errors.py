"""The one exception type for mistakes a user can make (bad params, missing files, no network).

The CLI prints its message on one line and exits non-zero, without a traceback of our internals.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the thing and what to do."""
