"""The one exception type for bad user input.

Every package raises :class:`InputError` for problems the user can fix (a missing
file, malformed JSON/TOML, an unknown task family, an invalid field). The CLI prints
its message on one line and exits with status 2, without a traceback. Anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input; the message names the file, field or value at fault."""
