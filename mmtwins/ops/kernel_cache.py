"""A verified on-disk cache of C++ extensions and libraries built on first
use (:func:`load_extension` for PyTorch extensions, :func:`build_library`
for plain shared libraries such as onnxruntime custom-operator libraries).

``torch.utils.cpp_extension.load`` trusts whatever ``.so`` its build folder
holds: a library truncated by a full disk or a killed copy is loaded as is
(and kills the process with SIGBUS when a missing page is touched), and it
always takes a lock file in the folder, so a read-only folder with a good
build cannot be used. This module puts a stamp beside every build it
completes: the library's size and SHA-256 and a digest of what it was built
from (sources, flags, torch version). On the next start:

- a stamp that matches the library: the library is imported directly, with
  nothing written to the folder (so a read-only folder works);
- no library: it is built, with one line saying so;
- a library without a stamp (an interrupted build), one whose size or
  checksum differs from its stamp (damaged), or one built from other
  sources: the folder is emptied and the library rebuilt, with one line
  naming the problem.

Builds are serialised across processes by an ``fcntl`` lock on a file in
the build folder, which the kernel drops when a process dies, so a killed
build never blocks the next one. A build that cannot happen raises
:class:`KernelCacheError` with a one-line message naming the real cause
(read-only folder, no compiler, no ninja, or the compiler's first error).
"""
import fcntl
import hashlib
import importlib.util
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Callable, Iterator, List, Optional, Sequence, TypeVar

import torch

_STAMP_SUFFIX = '.stamp.json'
_LOCK = 'mmtwins-build.lock'
T = TypeVar('T')


class KernelCacheError(RuntimeError):
    """A kernel can neither be loaded from the cache nor built; the
    message is one line naming the cause."""


def extensions_root() -> str:
    """``TORCH_EXTENSIONS_DIR``, or torch's default extensions folder."""
    root = os.environ.get('TORCH_EXTENSIONS_DIR')
    if root:
        return root
    from torch.utils.cpp_extension import get_default_build_root
    python = f'py{sys.version_info.major}{sys.version_info.minor}'
    return osp.join(get_default_build_root(), f'{python}_cpu')


def cpu_tag() -> str:
    """A short hash of this CPU's model name and instruction-set flags: it
    names builds made with ``-march=native``, so that machines with
    different CPUs sharing one cache folder each get their own build."""
    fields = []
    try:
        with open('/proc/cpuinfo') as info:
            for line in info:
                if line.startswith(('model name', 'flags')):
                    fields.append(line.strip())
                if len(fields) == 2:
                    break
    except OSError:
        import platform
        fields.append(platform.processor() or platform.machine())
    return hashlib.sha1('\n'.join(fields).encode()).hexdigest()[:10]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _inputs_digest(sources: Sequence[str], flags: Sequence[str]) -> str:
    """What a build depends on: sources (headers included), flags, torch
    and Python."""
    digest = hashlib.sha256()
    for source in sources:
        with open(source, 'rb') as file:
            digest.update(file.read())
    digest.update(json.dumps([list(flags), torch.__version__,
                              sys.version]).encode())
    return digest.hexdigest()


def _problem(library: str, stamp: str, inputs: str) -> Optional[str]:
    """Why the cached library cannot be used, or None when it can.

    ``'absent'`` means nothing was built yet; any other text completes the
    sentence "the kernel in <library> ...".
    """
    if not osp.exists(library):
        return 'absent'
    size = osp.getsize(library)
    try:
        with open(stamp) as file:
            record = json.load(file)
        expected_size, expected_hash = record['size'], record['sha256']
        built_from = record['inputs']
    except (OSError, ValueError, KeyError, TypeError):
        return (f'has no valid completion stamp ({size} bytes; an '
                'interrupted or older build)')
    if built_from != inputs:
        return 'was built from other sources or another torch'
    if size != expected_size:
        return (f'is truncated or damaged ({size} bytes, {expected_size} '
                'expected)')
    if _sha256(library) != expected_hash:
        return 'is damaged (its checksum differs from the stamp)'
    return None


def _import(name: str, library: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def _build_lock(directory: str) -> Iterator[None]:
    """Hold the folder's build lock (OSError if it cannot be written)."""
    os.makedirs(directory, exist_ok=True)
    handle = os.open(osp.join(directory, _LOCK), os.O_RDWR | os.O_CREAT,
                     0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # also drops the lock


def _empty(directory: str) -> None:
    """Remove every build file (torch's stale ``lock`` included) but ours.
    """
    for entry in os.listdir(directory):
        if entry == _LOCK:
            continue
        path = osp.join(directory, entry)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _write_stamp(library: str, stamp: str, inputs: str) -> None:
    record = dict(size=osp.getsize(library), sha256=_sha256(library),
                  inputs=inputs)
    partial = f'{stamp}.tmp-{os.getpid()}'
    with open(partial, 'w') as file:
        json.dump(record, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, stamp)


def _missing_tool(needs_ninja: bool = True) -> Optional[str]:
    """The build tool that is not installed, as advice, or None."""
    from torch.utils.cpp_extension import is_ninja_available
    compiler = os.environ.get('CXX', 'c++')
    if shutil.which(compiler) is None:
        return (f'no C++ compiler ({compiler}) on PATH; install one (e.g. '
                'g++)')
    if needs_ninja and not is_ninja_available():
        return 'ninja is not installed; pip install ninja'
    return None


def _build_error(error: Exception) -> str:
    """One line for a failed build: the compiler's first ``error:`` line
    if there is one, else the first line of the message (shortened)."""
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip()]
    compiler = [line for line in lines if 'error:' in line]
    reason = (compiler or lines or ['no message'])[0]
    if len(reason) > 200:
        reason = reason[:197] + '...'
    return f'{type(error).__name__}: {reason}'


def load_extension(name: str, sources: Sequence[str], label: str,
                   extra_cflags: Sequence[str] = (),
                   extra_ldflags: Sequence[str] = (),
                   root: Optional[str] = None,
                   debug: bool = False,
                   headers: Sequence[str] = ()) -> ModuleType:
    """The extension ``name`` from the verified cache, built if needed.

    Args:
        name (str): Module name; also names its folder under ``root``.
        sources (Sequence[str]): C++ sources (``TORCH_EXTENSION_NAME`` is
            defined to ``name``).
        label (str): What the messages call it, e.g. "the SASA CPU kernel".
        extra_cflags, extra_ldflags (Sequence[str]): Compiler and linker
            flags.
        root (str, optional): Extensions folder; default
            :func:`extensions_root`.
        debug (bool): Raise the build error itself (the whole compiler
            output) instead of :class:`KernelCacheError`.
        headers (Sequence[str]): Headers the sources include; a change to
            one rebuilds the extension like a change to a source.

    Returns:
        ModuleType: The imported extension.

    Raises:
        KernelCacheError: One line: the folder is read-only and holds no
            good build, a tool is missing, or the compiler failed.
    """
    flags: List[str] = list(extra_cflags) + list(extra_ldflags)
    inputs = _inputs_digest(list(sources) + list(headers), flags)

    def build(directory: str) -> ModuleType:
        from torch.utils.cpp_extension import load
        return load(name=name, sources=list(sources),
                    extra_cflags=list(extra_cflags),
                    extra_ldflags=list(extra_ldflags),
                    build_directory=directory, verbose=False)

    return _cached(name, label, inputs, root, build,
                   lambda library: _import(name, library), debug)


def build_library(name: str, sources: Sequence[str], label: str,
                  flags: Sequence[str] = (), headers: Sequence[str] = (),
                  root: Optional[str] = None, debug: bool = False) -> str:
    """A plain shared library (not a Python module) from the verified
    cache, compiled with the C++ compiler (``$CXX``, default ``c++``) if
    needed.

    Same cache, stamp, lock and messages as :func:`load_extension`; used
    for libraries that another program loads, such as onnxruntime's
    custom-operator libraries.

    Returns:
        str: Path of the verified ``<name>.so``.

    Raises:
        KernelCacheError: As :func:`load_extension`.
    """
    inputs = _inputs_digest(list(sources) + list(headers), list(flags))

    def build(directory: str) -> str:
        library = osp.join(directory, f'{name}.so')
        partial = f'{library}.tmp-{os.getpid()}'
        command = [os.environ.get('CXX', 'c++'), '-shared', '-fPIC',
                   *flags, *sources, '-o', partial]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr or done.stdout or
                               f'{command[0]} exited with {done.returncode}')
        os.replace(partial, library)
        return library

    return _cached(name, label, inputs, root, build, lambda path: path,
                   debug, needs_ninja=False)


def _cached(name: str, label: str, inputs: str, root: Optional[str],
            build: Callable[[str], T], load: Callable[[str], T],
            debug: bool, needs_ninja: bool = True) -> T:
    """``load(library)`` of a stamped build of ``name``, after building it
    with ``build(directory)`` when there is none that matches ``inputs``.
    """
    directory = osp.join(root or extensions_root(), name)
    library = osp.join(directory, f'{name}.so')
    stamp = osp.join(directory, f'{name}{_STAMP_SUFFIX}')
    problem = _problem(library, stamp, inputs)
    if problem is None:
        try:
            return load(library)
        except ImportError as error:  # e.g. a system library changed
            problem = f'cannot be imported ({error})'
    try:
        with _build_lock(directory):
            return _rebuild(label, directory, library, stamp, inputs,
                            build, load, debug, problem, needs_ninja)
    except OSError as error:  # read-only or vanished build files
        state = ('is not built yet' if problem == 'absent' else
                 f'in {library} {problem}')
        raise KernelCacheError(
            f'{label} {state} and its cache {directory} cannot be written '
            f'({error.strerror or error}); set TORCH_EXTENSIONS_DIR to a '
            'writable folder, or build the kernel there once with write '
            'access') from error


def _rebuild(label: str, directory: str, library: str, stamp: str,
             inputs: str, build: Callable[[str], T],
             load: Callable[[str], T], debug: bool, problem: str,
             needs_ninja: bool) -> T:
    """Under the build lock: load a build another process finished
    meanwhile, or build (``problem``: why the cached one was refused)."""
    if not problem.startswith('cannot be imported'):
        problem = _problem(library, stamp, inputs)  # built meanwhile?
        if problem is None:
            return load(library)
    missing = _missing_tool(needs_ninja)
    if missing is not None:
        raise KernelCacheError(f'{label} cannot be built: {missing}')
    if problem == 'absent':
        line = (f'mmtwins: building {label} (once per machine kind, '
                'about a minute)...')
    else:
        line = (f'mmtwins: {label} in {library} {problem}; rebuilding it '
                '(about a minute)...')
    print(line, file=sys.stderr, flush=True)
    _empty(directory)
    try:
        result = build(directory)
    except Exception as error:
        if debug:
            raise
        raise KernelCacheError(
            f'{label} could not be built ({_build_error(error)})'
        ) from error
    _write_stamp(library, stamp, inputs)
    return result
