"""The one base class of the errors a user can fix (ground floor: every layer may raise one).

``zoo`` prints such an error as one line naming the file or value at fault and the fix, and
exits 2; anything else is an internal error and shows its traceback. Errors that are also
built-in exceptions (``ValueError``, ``FileNotFoundError``, ...) keep those bases, so callers
can catch them either way.
"""

__all__ = ["UserError"]


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and how."""
