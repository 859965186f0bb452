"""The one exception that means "the user asked for something we cannot do": exit 2."""


class UsageError(Exception):
    """Bad input. The CLI prints ``bench: <message>`` on one line and exits 2."""


class ResultsWriteError(Exception):
    """The results folder could not be written; what was written before stays intact."""
