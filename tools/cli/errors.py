"""One-line errors for the command-line tools.

A user mistake (a missing file, a typo in the config, a checkpoint of
another model, a dataset that does not fit the config, ...) ends a tool
with a single ``error: ...`` line on stderr and exit status 2, naming the
file, key, URL or port and what to do. Anything else is a bug and raises
with its traceback as usual.

A full traceback for the user errors too: pass ``--debug`` to the tool or
set the environment variable ``MMTWINS_DEBUG=1``; the traceback is printed
above the same ``error:`` line, and the exit status stays 2.

A new tool gets all of this with::

    parser = argparse.ArgumentParser(...)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    with exit_on_user_error(args.debug) as ctx:
        cfg = load_config(...)
        ctx.cfg = cfg          # lets the data diagnoses read its datasets
        ...

What counts as a user error:

* :class:`ToolError`, raised by the tools' own checks;
* :class:`mmtwins.errors.InputError`, raised by the library (checkpoints
  that do not fit, a head whose ``num_classes`` disagrees with the data);
* any exception raised while mmengine builds a class from the config
  (``build_from_cfg`` is in its traceback), e.g. an unknown type, a
  misspelt argument or a value the class refuses;
* a file-system error that names its file (``FileNotFoundError``,
  ``PermissionError``, ...);
* a dataset problem recognised by :mod:`tools.cli.data_checks` (an
  annotation file that is not valid JSON, a dataset with no sample of the
  configured classes), or by a diagnosis a tool adds to :data:`DIAGNOSES`.
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional

DATA_DOC = 'README.md#data-preparation'
DEBUG_ENV = 'MMTWINS_DEBUG'

# The file of mmengine's build_from_cfg & co.
_BUILD_FILE = os.path.join('mmengine', 'registry', 'build_functions.py')
# mmengine's registry error for an unknown type.
_UNKNOWN_TYPE = re.compile(r'`?([\w.]+)`? is not in the ([\w:]+) registry')


class ToolError(Exception):
    """A user error found by a tool, with a message that fits on one line."""


class ErrorContext:
    """What the diagnoses may read: the loaded config, once there is one."""

    def __init__(self) -> None:
        self.cfg: Any = None


Diagnosis = Callable[[BaseException, ErrorContext], Optional[str]]


def add_debug_flag(parser) -> None:
    """Add ``--debug`` (a traceback for user errors too) to a parser."""
    parser.add_argument(
        '--debug', action='store_true',
        help='show the full traceback of an error instead of one line '
        f'(or set {DEBUG_ENV}=1)')


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given or ``MMTWINS_DEBUG`` set to something true."""
    env = os.environ.get(DEBUG_ENV, '').strip().lower()
    return flag or env not in ('', '0', 'false', 'no')


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, outermost first."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def built_classes(exc: BaseException) -> List[str]:
    """The classes mmengine was building from the config when ``exc`` was
    raised, outermost first (empty if it was not raised in a build).

    mmengine's ``build_from_cfg`` does not wrap the errors of the classes
    it builds, so this reads its frames in the traceback.
    """
    names: List[str] = []
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename.endswith(_BUILD_FILE):
            cls = frame.f_locals.get('obj_cls')
            cfg = frame.f_locals.get('cfg')
            name = getattr(cls, '__name__', None) or (
                cfg.get('type') if isinstance(cfg, dict) else None)
            name = str(name).split('.')[-1] if name else None
            if name and (not names or names[-1] != name):
                names.append(name)
        tb = tb.tb_next
    return names


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0]).strip()  # str() of a KeyError adds quotes
    return str(exc).strip()


def _unknown_type(exc: BaseException, ctx: ErrorContext) -> Optional[str]:
    if not isinstance(exc, KeyError):
        return None
    match = _UNKNOWN_TYPE.search(str(exc))
    if match is None:
        return None
    name, registry = match.groups()
    return (f'unknown type {name!r} in the config: it is not registered in '
            f'{registry}; check the spelling, or add the package that '
            'defines it to custom_imports')


def _build_error(exc: BaseException, ctx: ErrorContext) -> Optional[str]:
    """An error raised by a class that mmengine built from the config."""
    classes = built_classes(exc)
    if not classes:
        return None
    return (f'the config does not build ({" > ".join(classes)}): '
            f'{type(exc).__name__}: {_message(exc)}; fix that setting in '
            'the config or in --cfg-options (--debug for the traceback)')


def _file_error(exc: BaseException, ctx: ErrorContext) -> Optional[str]:
    if not isinstance(exc, OSError):
        return None
    if exc.filename is not None:
        return f'{exc.strerror or exc}: {exc.filename}'
    if isinstance(exc, FileNotFoundError):  # mmengine: "X can not be found."
        return f'file not found: {_message(exc)}'
    return None


#: Extra diagnoses a tool may append (tried before the generic ones).
DIAGNOSES: List[Diagnosis] = []
#: Tried last: the generic build and file errors.
GENERIC_DIAGNOSES: List[Diagnosis] = [_build_error, _file_error]


def user_error_message(exc: BaseException,
                       ctx: Optional[ErrorContext] = None) -> Optional[str]:
    """The one-line message for ``exc`` if it is a user error, else None."""
    from mmtwins.errors import InputError

    from .data_checks import DATA_DIAGNOSES
    ctx = ctx or ErrorContext()
    causes = list(chain(exc))
    for err in causes:
        if isinstance(err, (ToolError, InputError)):
            return str(err)
    specific = [_unknown_type, *DATA_DIAGNOSES, *DIAGNOSES]
    for diagnoses in (specific, GENERIC_DIAGNOSES):
        for err in causes:
            for diagnose in diagnoses:
                try:
                    msg = diagnose(err, ctx)
                except Exception:  # a diagnosis must never hide the error
                    msg = None
                if msg:
                    return msg
    return None


@contextmanager
def exit_on_user_error(debug: bool = False) -> Iterator[ErrorContext]:
    """Turn a user error into one ``error:`` line and exit status 2.

    Args:
        debug (bool): print the full traceback above the line (also when
            ``MMTWINS_DEBUG`` is set).

    Yields:
        ErrorContext: set its ``cfg`` once the config is loaded.
    """
    ctx = ErrorContext()
    try:
        yield ctx
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        msg = user_error_message(exc, ctx)
        if msg is None:
            raise
        if debug_requested(debug):
            traceback.print_exc()
        die(msg)


def die(msg: str) -> None:
    """Print ``error: msg`` as one line on stderr and exit with status 2."""
    msg = ' '.join(str(msg).split())  # keep it to one line
    print(f'error: {msg}', file=sys.stderr, flush=True)
    sys.exit(2)
