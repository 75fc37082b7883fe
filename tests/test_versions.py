"""One place pins the versions: pyproject.toml, read by the import-time
version check and by tools/setup_env.sh."""
import os.path as osp
import re

import pytest
from tools_helpers import REPO

import mmtwins
from mmtwins.version import _load_toml, requirements


def test_requirements_come_from_pyproject():
    project = _load_toml(osp.join(REPO, 'pyproject.toml'))['project']
    assert requirements() == project['dependencies']
    assert {'mmengine==0.10.7', 'mmdet==3.3.0',
            'mmsegmentation==1.2.2'} <= set(requirements())
    tests = project['optional-dependencies']['tests']
    assert {'onnx', 'onnxruntime', 'onnxscript', 'triton'} <= set(tests)


def test_setup_env_holds_no_version_of_its_own():
    with open(osp.join(REPO, 'tools', 'setup_env.sh')) as f:
        script = f.read()
    assert 'pyproject.toml' in script
    # Only the setuptools range that mmcv's build needs is spelt out.
    code = re.sub(r'#.*', '', script)  # comments may name versions
    versions = re.findall(r'(?:==|>=|<=|<|>)\s*\d[\d.]*', code)
    assert versions == ['>=77', '<81'], versions


def test_version_check_names_the_package(monkeypatch):
    monkeypatch.setattr(mmtwins, 'requirements', lambda: ['mmengine>=9.0'])
    with pytest.raises(RuntimeError, match=r'needs mmengine>=9\.0, but '
                       r'mmengine 0\.10\.7 is installed; run `bash '
                       r'tools/setup_env\.sh`'):
        mmtwins._check_versions()
    monkeypatch.setattr(mmtwins, 'requirements',
                        lambda: ['mmengine==0.10.7', 'not-installed>=1'])
    mmtwins._check_versions()  # in range; a missing package is skipped
