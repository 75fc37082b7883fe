"""The verified kernel cache of :mod:`mmtwins.ops.kernel_cache`.

A small fake extension (plain Python C API, a second to build) stands in
for the SASA CPU kernel, so these tests never compile the real one. Every
load runs in a fresh process, as a user's would: a truncated library must
be rebuilt (not kill the process with SIGBUS), a good build in a read-only
folder must load without writing there, and a build that cannot happen
names its real cause in one line.
"""
import json
import os
import os.path as osp
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from mmtwins.ops import kernel_cache, sasa_cpu
from mmtwins.ops.kernel_cache import KernelCacheError

NAME = 'mmtwins_fake_kernel'

SOURCE = textwrap.dedent('''
    #include <Python.h>
    #define CAT2(a, b) a##b
    #define CAT(a, b) CAT2(a, b)
    #define TEXT2(a) #a
    #define TEXT(a) TEXT2(a)
    static PyObject* answer(PyObject*, PyObject*) {
      return PyLong_FromLong(42);
    }
    static PyMethodDef methods[] = {
        {"answer", answer, METH_NOARGS, "42"}, {nullptr, nullptr, 0,
                                                nullptr}};
    static PyModuleDef module = {PyModuleDef_HEAD_INIT,
                                 TEXT(TORCH_EXTENSION_NAME), nullptr, -1,
                                 methods};
    PyMODINIT_FUNC CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
      return PyModule_Create(&module);
    }
''')

# The child: load the fake kernel, print its answer; a KernelCacheError
# is printed as its one line, with exit status 3. MMTWINS_TEST_NO_WRITE
# (set only where no real read-only folder can be made) makes every write
# under the cache fail with EROFS, as a read-only mount would.
CHILD = textwrap.dedent('''
    import errno, os, sys
    root, source, debug = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
    if os.environ.get('MMTWINS_TEST_NO_WRITE'):
        import builtins
        real_open, real_os_open = builtins.open, os.open
        real_makedirs = os.makedirs

        def refuse(path):
            if os.path.abspath(str(path)).startswith(root):
                raise OSError(errno.EROFS, 'Read-only file system', path)

        def fake_open(path, mode='r', *args, **kwargs):
            if any(flag in mode for flag in 'wax+'):
                refuse(path)
            return real_open(path, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_makedirs(path, *args, **kwargs):
            if not os.path.isdir(path):
                refuse(path)
            return real_makedirs(path, *args, **kwargs)

        builtins.open, os.open, os.makedirs = (fake_open, fake_os_open,
                                               fake_makedirs)
    # The loader module alone: importing the mmtwins package (mmdet,
    # mmseg) would take most of the child's time.
    import importlib.util
    spec = importlib.util.spec_from_file_location('kernel_cache', sys.argv[4])
    kernel_cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel_cache)
    KernelCacheError = kernel_cache.KernelCacheError
    try:
        module = kernel_cache.load_extension(
            sys.argv[5], [source], 'the test kernel', root=root, debug=debug)
    except KernelCacheError as error:
        print(error)
        sys.exit(3)
    print(module.answer())
''')


def _load(root: str, source: str, debug: bool = False,
          read_only: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, '-c', CHILD, root, source,
               '1' if debug else '0', kernel_cache.__file__, NAME]
    env = dict(os.environ)
    if read_only:
        command, extra = _read_only(root, command)
        env.update(extra)
    return subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=300)


def _read_only(root: str, command: list) -> tuple:
    """Run ``command`` with ``root`` really read-only where possible: a
    read-only bind mount in a private mount namespace (root), folders
    without write permission (other users), else injected EROFS."""
    if os.geteuid() != 0:
        for folder, _, _ in os.walk(root):
            os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
        return command, {}
    mount = ['unshare', '--mount', 'sh', '-c',
             'mount --bind -o ro "$0" "$0" && exec "$@"', root]
    probe = subprocess.run(mount + ['true'], capture_output=True)
    if probe.returncode == 0:
        return mount + command, {}
    return command, {'MMTWINS_TEST_NO_WRITE': '1'}


def _files(root: str) -> dict:
    """Every file under ``root`` with its size and modification time."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            info = os.stat(path)
            found[osp.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """One build of the fake kernel (also the first-build test)."""
    base = tmp_path_factory.mktemp('kernel_cache')
    source = base / 'fake_kernel.cpp'
    source.write_text(SOURCE)
    root = base / 'template'
    first = _load(str(root), str(source))
    return dict(base=base, source=str(source), root=str(root), first=first)


@pytest.fixture
def cache(built, tmp_path):
    """A copy of the built cache for one test to damage."""
    root = tmp_path / 'cache'
    shutil.copytree(built['root'], root, symlinks=True)
    yield str(root), osp.join(str(root), NAME, f'{NAME}.so')
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)


def test_first_build_says_so_once_then_loads_silently(built):
    first = built['first']
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == '42'
    lines = first.stderr.strip().splitlines()
    assert lines == ['mmtwins: building the test kernel (once per machine '
                     'kind, about a minute)...'], first.stderr
    folder = osp.join(built['root'], NAME)
    with open(osp.join(folder, f'{NAME}.stamp.json')) as file:
        stamp = json.load(file)
    assert stamp['size'] == osp.getsize(osp.join(folder, f'{NAME}.so'))
    again = _load(built['root'], built['source'])
    assert (again.returncode, again.stdout.strip(), again.stderr) == (
        0, '42', '')


@pytest.mark.parametrize('damage,reason', [
    ('truncate', 'is truncated or damaged'),
    ('empty', 'is truncated or damaged (0 bytes'),
    ('corrupt', 'is damaged (its checksum differs from the stamp)'),
    ('no-stamp', 'has no valid completion stamp'),
])
def test_damaged_build_is_rebuilt_with_one_line(cache, built, damage,
                                                reason):
    root, library = cache
    size = osp.getsize(library)
    if damage == 'truncate':
        os.truncate(library, size // 2)
    elif damage == 'empty':
        os.truncate(library, 0)
    elif damage == 'corrupt':
        with open(library, 'r+b') as file:
            file.seek(size // 2)
            file.write(b'\xff' * 64)
    else:
        os.remove(osp.join(root, NAME, f'{NAME}.stamp.json'))
    result = _load(root, built['source'])
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.strip() == '42'
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f'mmtwins: the test kernel in {library} '
                               f'{reason}'), lines[0]
    assert lines[0].endswith('rebuilding it (about a minute)...')
    assert osp.getsize(library) == size
    again = _load(root, built['source'])
    assert (again.returncode, again.stdout.strip(), again.stderr) == (
        0, '42', '')


def test_changed_source_is_rebuilt(cache, built, tmp_path):
    root, _ = cache
    source = tmp_path / 'fake_kernel.cpp'
    source.write_text(SOURCE.replace('42', '43'))
    result = _load(root, str(source))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '43'
    assert 'was built from other sources' in result.stderr


def test_good_build_loads_from_a_read_only_folder(cache, built):
    root, _ = cache
    before = _files(root)
    result = _load(root, built['source'], read_only=True)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (
        0, '42', '')
    assert _files(root) == before  # no lock file, nothing written


@pytest.mark.parametrize('damage', ['empty', 'absent'])
def test_read_only_folder_without_a_good_build_names_the_cause(
        cache, built, damage):
    root, library = cache
    if damage == 'empty':
        os.truncate(library, 0)
    else:
        shutil.rmtree(osp.join(root, NAME))
    result = _load(root, built['source'], read_only=True)
    assert result.returncode == 3, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    state = ('is not built yet' if damage == 'absent' else
             f'in {library} is truncated or damaged (0 bytes')
    assert lines[0].startswith(f'the test kernel {state}'), lines[0]
    assert 'cannot be written' in lines[0]
    assert 'set TORCH_EXTENSIONS_DIR to a writable folder' in lines[0]
    assert 'compiler' not in lines[0] and 'ninja' not in lines[0]
    assert 'building' not in result.stderr


def test_compiler_error_is_one_line(tmp_path):
    source = tmp_path / 'broken.cpp'
    source.write_text('int broken( {\n')
    result = _load(str(tmp_path / 'cache'), str(source))
    assert result.returncode == 3, result.stderr
    line = result.stdout.strip()
    assert '\n' not in line
    assert line.startswith('the test kernel could not be built '
                           '(RuntimeError: '), line
    assert 'error:' in line
    debug = _load(str(tmp_path / 'cache'), str(source), debug=True)
    assert debug.returncode == 1
    assert 'Traceback' in debug.stderr and 'broken.cpp' in debug.stderr


def test_sasa_falls_back_with_the_cause_in_one_warning(monkeypatch):
    """What the SASA CPU kernel does with a cache error: one warning with
    the cache's line, then the exact offset loop."""
    import torch

    from mmtwins.models.layers import SASAttention
    monkeypatch.setattr(sasa_cpu, '_module', None)
    monkeypatch.setattr(sasa_cpu, '_failure', None)
    cause = ('the SASA CPU kernel is not built yet and its cache /x cannot '
             'be written (Read-only file system); set TORCH_EXTENSIONS_DIR '
             'to a writable folder')

    def refused():
        raise KernelCacheError(cause)

    monkeypatch.setattr(sasa_cpu, '_build', refused)
    layer = SASAttention(4, 8, 3, num_heads=2).double()
    with pytest.warns(UserWarning) as record:
        out = layer(torch.randn(1, 4, 5, 6, dtype=torch.float64))
    assert out.shape == (1, 8, 5, 6)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(f'mmtwins: {cause}; SASA runs the slower '
                              'exact offset loop')
    assert '\n' not in message and 'install' not in message
    assert sasa_cpu.kernel() is None  # once


def test_plain_library_is_built_stamped_and_rebuilt_when_damaged(
        tmp_path, capfd):
    """build_library: the same verified cache for a shared library that
    another program loads (onnxruntime's operator library)."""
    source = tmp_path / 'answer.cpp'
    header = tmp_path / 'answer.h'
    header.write_text('#define ANSWER 42\n')
    source.write_text('#include "answer.h"\n'
                      'extern "C" int answer() { return ANSWER; }\n')
    root = str(tmp_path / 'cache')

    def build():
        return kernel_cache.build_library(
            'mmtwins_fake_library', [str(source)], 'the test library',
            flags=['-O1'], headers=[str(header)], root=root)

    path = build()
    assert capfd.readouterr().err.strip() == (
        'mmtwins: building the test library (once per machine kind, about '
        'a minute)...')
    import ctypes
    copy = str(tmp_path / 'loaded.so')  # the cached file gets truncated
    shutil.copy(path, copy)
    assert ctypes.CDLL(copy).answer() == 42
    assert osp.isfile(path[:-3] + '.stamp.json')
    assert build() == path and capfd.readouterr().err == ''
    os.truncate(path, osp.getsize(path) // 2)
    assert build() == path
    assert 'is truncated or damaged' in capfd.readouterr().err
    header.write_text('#define ANSWER 43\n')  # a header change rebuilds
    build()
    assert 'was built from other sources' in capfd.readouterr().err
    header.write_text('#define ANSWER 43 +\n')
    with pytest.raises(KernelCacheError) as info:
        build()
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith('the test library could not be built '
                              '(RuntimeError: ')
    assert 'error:' in message
