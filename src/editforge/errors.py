"""Errors a user can cause. The CLI turns them into one line and exit code 2."""


class EditForgeError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
