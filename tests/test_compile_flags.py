"""``--compile`` of tools/train.py (mmengine's ``compile`` runner option)
and tools/test.py (backbone and neck compiled in place, keys unchanged)."""
import torch
from tools_helpers import load_tool, make_mini, write_config


def test_train_compile_sets_the_runner_option(tmp_path):
    train = load_tool('train.py')
    data = make_mini(str(tmp_path / 'mini'), 2, 1)
    cfg_path = write_config(str(tmp_path / 'det.py'), 'detection', data)
    for flags, expected in (([], None), (['--compile'], True)):
        args = train.parse_args([cfg_path, '--work-dir',
                                 str(tmp_path / 'wd'), *flags])
        cfg = train.build_train_config(args)
        assert cfg.get('compile') is expected


def test_train_malloc_default_changes_nothing():
    # --malloc reuse (the default) is checked by a real CPU training run in
    # test_train_test.py; here: the opt-out leaves the allocator alone.
    train = load_tool('train.py')
    assert train.parse_args(['x.py']).malloc == 'reuse'
    assert train.apply_cpu_malloc('default') is None


def test_train_memory_budget_needs_compile_and_a_fraction(tmp_path):
    import pytest

    from tools.cli.errors import ToolError
    train = load_tool('train.py')
    data = make_mini(str(tmp_path / 'mini'), 2, 1)
    cfg_path = write_config(str(tmp_path / 'det.py'), 'detection', data)
    base = [cfg_path, '--work-dir', str(tmp_path / 'wd')]
    args = train.parse_args([*base, '--compile', '--memory-budget', '0.7'])
    assert train.build_train_config(args).get('compile') is True
    for flags, match in (
            (['--memory-budget', '0.7'], r'add --compile'),
            (['--compile', '--memory-budget', '2'],
             r'--memory-budget: .*must be in \[0, 1\]')):
        with pytest.raises(ToolError, match=match):
            train.build_train_config(train.parse_args([*base, *flags]))

def test_test_compile_compiles_backbone_and_neck_in_place():
    test = load_tool('test.py')

    class Detector(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 4, 1)
            self.neck = torch.nn.Conv2d(4, 4, 1)
            self.head = torch.nn.Conv2d(4, 1, 1)

    model = Detector()
    keys = list(model.state_dict())
    test.compile_for_test(model)
    assert model.backbone._compiled_call_impl is not None
    assert model.neck._compiled_call_impl is not None
    assert model.head._compiled_call_impl is None  # post-processing eager
    assert list(model.state_dict()) == keys  # load_from still matches
