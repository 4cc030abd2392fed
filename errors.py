"""The error every layer raises for a user's mistake, so the command line can print it in
one line (``error: ...``, exit code 2) instead of a traceback. (What the system refuses,
a full disk or a read-only folder, is an `OSError` naming the file: one line and exit
code 1; `sparsefield.cli` lists every exit code.)"""


class UsageError(ValueError):
    """A command-line or configuration mistake (a bad flag value, a run folder that is not
    a run, an unsupported file type). The message is one line that names the flag, file
    or value and the problem."""
