"""The one exception type a user's mistake becomes.

The CLI turns a `UserError` into one line on stderr and exit code 2, so every layer of the library can refuse bad
input where it detects it without knowing about the terminal.
"""


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, malformed row); never a bug in cee-bench."""
