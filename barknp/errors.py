"""barknp's error type: one clear, one-line message naming what was wrong."""


class BarkError(ValueError):
    """Bad input or a bad model file. The message is one line, fit to show a user as is."""
