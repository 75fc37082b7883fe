"""Bad input to tools/train.py and tools/test.py gives one clear line.

The tools run in-process here (their real ``main``), which keeps these
checks fast; every case must end in exit status 2 with a single
``error: ...`` line on stderr and no traceback.
"""
import os.path as osp

import pytest
from tools_helpers import DET_CFG, SEG_CFG, load_tool, make_mini, write_config

train_tool = load_tool('train.py')
test_tool = load_tool('test.py')


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 2, 1)


def _dummy_ckpt(tmp_path) -> str:
    path = tmp_path / 'model.pth'
    path.write_bytes(b'')
    return str(path)


def _error(capsys, tool, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert 'Traceback' not in '\n'.join(err)
    assert err[-1].startswith('error: ')
    return err[-1]


def test_missing_config(capsys, tmp_path):
    msg = _error(capsys, train_tool, [str(tmp_path / 'nope.py')])
    assert 'config file not found' in msg and 'nope.py' in msg
    msg = _error(capsys, test_tool, ['nope.py', 'x.pth'])
    assert 'config file not found: nope.py' in msg


def test_missing_dataset_folder(capsys, tmp_path):
    root = str(tmp_path / 'no_coco') + '/'
    msg = _error(capsys, train_tool, [
        DET_CFG, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
        f'train_dataloader.dataset.data_root={root}'
    ])
    assert root in msg and 'README.md#data-preparation' in msg
    assert 'train_dataloader.dataset.data_root' in msg


def test_missing_annotation_file(capsys, tmp_path, mini):
    cfg = write_config(str(tmp_path / 'det.py'), 'detection', mini)
    missing = osp.join(mini, 'coco', 'annotations', 'instances_x.json')
    msg = _error(capsys, train_tool, [
        cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
        f'train_dataloader.dataset.ann_file={missing}'
    ])
    assert f'annotation file not found: {missing}' in msg
    assert 'README.md#data-preparation' in msg


def test_missing_segmentation_folder(capsys, tmp_path, mini):
    cfg = write_config(str(tmp_path / 'seg.py'), 'segmentation', mini)
    msg = _error(capsys, test_tool, [
        cfg, _dummy_ckpt(tmp_path), '--work-dir', str(tmp_path / 'w'),
        '--cfg-options',
        'test_dataloader.dataset.data_prefix.seg_map_path=annotations/test'
    ])
    assert osp.join('annotations', 'test') in msg
    assert 'README.md#data-preparation' in msg


def test_missing_checkpoint(capsys, tmp_path, mini):
    cfg = write_config(str(tmp_path / 'seg.py'), 'segmentation', mini)
    msg = _error(capsys, test_tool, [cfg, str(tmp_path / 'none.pth')])
    assert msg == f'error: checkpoint file not found: {tmp_path}/none.pth'
    msg = _error(capsys, train_tool,
                 [cfg, '--resume', str(tmp_path / 'none.pth')])
    assert 'checkpoint to resume from not found' in msg


@pytest.mark.parametrize('option, fragment', [
    ('model.backbone.archh=small', "model.backbone has no 'archh'"),
    ('train_cfg.max_itrs=3', "train_cfg has no 'max_itrs'"),
    ('model.nonexistent.depth=3', "model has no 'nonexistent'"),
    ('no_such_key=1', "the config has no 'no_such_key'"),
    ('train_dataloader.dataset.pipeline.9.scale=3', 'no index'),
])
def test_unknown_cfg_option(capsys, tmp_path, option, fragment):
    msg = _error(capsys, train_tool, [
        SEG_CFG, '--work-dir', str(tmp_path), '--cfg-options', option])
    assert 'unknown --cfg-options key' in msg and fragment in msg


def test_known_new_cfg_options_are_accepted(tmp_path, mini):
    """Keys a config may add: class arguments and Runner settings."""
    from mmtwins.utils.config_checks import load_config
    cfg = load_config(write_config(str(tmp_path / 's.py'), 'segmentation',
                                   mini),
                      {'model.backbone.frozen_stages': 1,
                       'model.decode_head.loss_decode.avg_non_ignore': True,
                       'load_from': 'x.pth',
                       'train_dataloader.dataset.pipeline.1.'
                       'reduce_zero_label': False})
    assert cfg.model.backbone.frozen_stages == 1
    assert cfg.load_from == 'x.pth'


def test_unknown_model_type(capsys, tmp_path, mini):
    cfg = write_config(str(tmp_path / 'seg.py'), 'segmentation', mini)
    msg = _error(capsys, train_tool, [
        cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
        'model.backbone.type=mmtwins.TwinsFoo'
    ])
    assert "unknown type 'mmtwins.TwinsFoo'" in msg
    assert 'not registered' in msg


def test_wrong_default_scope(capsys, tmp_path):
    cfg = tmp_path / 'odd.py'
    cfg.write_text("default_scope = 'mmpretrain'\n")
    msg = _error(capsys, train_tool, [str(cfg)])
    assert "default_scope is 'mmpretrain'" in msg


def test_amp_on_cpu(capsys, tmp_path, mini):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU, AMP is allowed')
    cfg = write_config(str(tmp_path / 'seg.py'), 'segmentation', mini)
    msg = _error(capsys, train_tool, [cfg, '--amp', '--work-dir',
                                      str(tmp_path / 'w')])
    assert msg.startswith('error: --amp needs a GPU')
