"""Errors a user can cause: each message names the file, key or value and says what to do."""


class VipnbError(Exception):
    """A problem with the user's input (data, recipe, split file, command line).

    The command-line entry point prints these as one clear message instead of a traceback.
    """
