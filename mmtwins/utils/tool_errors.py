"""One-line errors for the command-line tools.

The tools in ``tools/`` turn user mistakes (a missing config, checkpoint or
dataset folder, an unknown ``--cfg-options`` key or model type) into a
single ``error: ...`` line on stderr and exit status 2, instead of a deep
traceback. Real bugs still raise normally.
"""
from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

DATA_DOC = 'README.md#data-preparation'

# mmengine's registry error, possibly wrapped by every enclosing build:
# "class `RetinaNet` in ...: 'Foo is not in the mmdet::model registry. ..."
_UNKNOWN_TYPE = re.compile(r'`?([\w.]+)`? is not in the ([\w:]+) registry')


class ToolError(Exception):
    """A user error with a message that fits on one line."""


def unknown_type_message(exc: BaseException) -> Optional[str]:
    """The one-line message for mmengine's "not in the registry" KeyError,
    or ``None`` when ``exc`` is something else."""
    if not isinstance(exc, KeyError):
        return None
    match = _UNKNOWN_TYPE.search(str(exc))
    if match is None:
        return None
    name, registry = match.groups()
    return (f'unknown type {name!r} in the config: it is not registered in '
            f'{registry}; check the spelling, or add the package that '
            'defines it to custom_imports')


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a :class:`ToolError` or an unknown-type ``KeyError`` as one
    ``error:`` line and exit with status 2; re-raise anything else."""
    try:
        yield
    except ToolError as exc:
        _die(str(exc))
    except KeyError as exc:
        msg = unknown_type_message(exc)
        if msg is None:
            raise
        _die(msg)


def _die(msg: str) -> None:
    msg = ' '.join(msg.split())  # keep it to one line
    print(f'error: {msg}', file=sys.stderr, flush=True)
    sys.exit(2)
