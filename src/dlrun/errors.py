"""The one exception type that means "the user asked for something we can't do".

The CLI turns it into a single clear line on stderr and a non-zero exit, never a
traceback; anything else escaping is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (config value, file, model/data pairing)."""
