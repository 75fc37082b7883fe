"""Every user error of the tools gives one clear line and exit status 2.

The tools run in-process here (their real ``main``), which keeps these
checks fast: most cases stop before a model is built, the others right
after the first build or at the start of training. Every case must end in
exit status 2 with a single ``error: ...`` line on stderr that names the
file, key, URL or port, and no traceback; ``--debug`` and
``MMTWINS_DEBUG=1`` bring the traceback back.
"""
import json
import os
import os.path as osp
import shutil
import socket
import subprocess

import pytest
import torch
from tools_helpers import (
    DET_CFG,
    REPO,
    SEG_CFG,
    load_tool,
    make_mini,
    write_config,
)

train_tool = load_tool('train.py')
test_tool = load_tool('test.py')
convert_tool = load_tool('model_converters/twins2mmtwins.py')
TOOLS = {'train': train_tool, 'test': test_tool, 'convert': convert_tool}


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 2, 1)


@pytest.fixture
def data(tmp_path, mini):
    """A private copy of the mini data that a case may break."""
    return shutil.copytree(mini, str(tmp_path / 'data'))


@pytest.fixture(scope='module')
def det_weights(tmp_path_factory):
    """A checkpoint of the detection quickstart model (random weights)."""
    return _model_checkpoint(tmp_path_factory, DET_CFG, 'det.pth')


@pytest.fixture(scope='module')
def seg_weights(tmp_path_factory):
    return _model_checkpoint(tmp_path_factory, SEG_CFG, 'seg.pth')


def _model_checkpoint(tmp_path_factory, config, name):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmtwins  # noqa: F401
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    path = str(tmp_path_factory.mktemp('ckpt') / name)
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return path


def _run(capsys, tool, argv):
    from mmengine.logging import MMLogger
    before = set(MMLogger._instance_dict)
    try:
        with pytest.raises(SystemExit) as exc:
            TOOLS[tool].main(argv)
    finally:
        # A runner names its logger after the second it starts, so a later
        # run in the same second would reuse this logger, whose handler
        # writes to this test's captured (then closed) stderr.
        for name in set(MMLogger._instance_dict) - before:
            logger = MMLogger._instance_dict.pop(name)
            for handler in list(logger.handlers):
                handler.close()
                logger.removeHandler(handler)
    return exc.value.code, capsys.readouterr().err


def _error(capsys, tool, argv) -> str:
    code, err = _run(capsys, tool, argv)
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert 'Traceback' not in err
    assert lines[-1].startswith('error: '), err[-3000:]
    return lines[-1]


# --------------------------------------------------------------- the cases
# Each builder gets (tmp_path, data, weights) and returns the tool, its
# arguments and the fragments the error line must contain.


def _det(tmp, data, extra=''):
    return write_config(str(tmp / 'det.py'), 'detection', data, extra)


def _seg(tmp, data, extra=''):
    return write_config(str(tmp / 'seg.py'), 'segmentation', data, extra)


# One block per stage instead of PCPVT-S's (3, 4, 6, 3): the cases that
# start training build and initialise the model in a third of the time.
ONE_BLOCK = ("model = dict(backbone=dict(arch=dict(_delete_=True, "
             "embed_dims=[64, 128, 320, 512], depths=[1, 1, 1, 1], "
             "num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4], "
             "sr_ratios=[8, 4, 2, 1])))\n")


def missing_config(tmp, data, w):
    return 'train', [str(tmp / 'nope.py')], ['config file not found',
                                             'nope.py']


def config_syntax_error(tmp, data, w):
    cfg = tmp / 'broken.py'
    cfg.write_text("_base_ = 'x.py'\nmodel = dict(\n")
    return 'train', [str(cfg)], ['syntax error in config', str(cfg),
                                 'line']


def config_missing_base(tmp, data, w):
    cfg = tmp / 'child.py'
    cfg.write_text("_base_ = './no_such_base.py'\n")
    return 'test', [str(cfg), 'x.pth'], ['cannot read config', str(cfg)]


def wrong_default_scope(tmp, data, w):
    cfg = tmp / 'odd.py'
    cfg.write_text("default_scope = 'mmpretrain'\n")
    return 'train', [str(cfg)], ["default_scope is 'mmpretrain'"]


def missing_dataset_folder(tmp, data, w):
    root = str(tmp / 'no_coco') + '/'
    return 'train', [DET_CFG, '--work-dir', str(tmp / 'w'), '--cfg-options',
                     f'train_dataloader.dataset.data_root={root}'], [
        root, 'train_dataloader.dataset.data_root',
        'README.md#data-preparation']


def missing_annotation_file(tmp, data, w):
    missing = osp.join(data, 'coco', 'annotations', 'instances_x.json')
    return 'train', [_det(tmp, data), '--work-dir', str(tmp / 'w'),
                     '--cfg-options',
                     f'train_dataloader.dataset.ann_file={missing}'], [
        f'annotation file not found: {missing}']


def missing_segmentation_folder(tmp, data, w):
    return 'test', [
        _seg(tmp, data), w['seg'], '--work-dir', str(tmp / 'w'),
        '--cfg-options',
        'test_dataloader.dataset.data_prefix.seg_map_path=annotations/test'
    ], [osp.join('annotations', 'test'), 'README.md#data-preparation']


def truncated_annotation_json(tmp, data, w):
    ann = osp.join(data, 'coco', 'annotations', 'instances_val2017.json')
    with open(ann) as f:
        text = f.read()
    with open(ann, 'w') as f:
        f.write(text[:len(text) // 2])
    return 'train', [_det(tmp, data, ONE_BLOCK), '--work-dir',
                     str(tmp / 'w')], [ann, 'not valid JSON', 'truncated']


def zero_byte_image(tmp, data, w):
    folder = osp.join(data, 'coco', 'val2017')
    image = osp.join(folder, sorted(os.listdir(folder))[0])
    open(image, 'w').close()
    return 'train', [_det(tmp, data), '--work-dir', str(tmp / 'w')], [
        f'empty (0-byte) file in the dataset: {image}']


def zero_byte_label(tmp, data, w):
    folder = osp.join(data, 'ade', 'ADEChallengeData2016', 'annotations',
                      'validation')
    label = osp.join(folder, sorted(os.listdir(folder))[0])
    open(label, 'w').close()
    return 'test', [_seg(tmp, data), w['seg'], '--work-dir',
                    str(tmp / 'w')], [
        f'empty (0-byte) file in the dataset: {label}']


def missing_checkpoint(tmp, data, w):
    return 'test', [_seg(tmp, data), str(tmp / 'none.pth')], [
        f'checkpoint file not found: {tmp}/none.pth']


def unwritable_work_dir(tmp, data, w):
    (tmp / 'file').write_text('')
    work = str(tmp / 'file' / 'work')
    return 'train', [_seg(tmp, data), '--work-dir', work], [
        f'cannot create the work dir {work}', '--work-dir']


def cfg_option_bad_index(tmp, data, w):
    return 'train', [SEG_CFG, '--work-dir', str(tmp), '--cfg-options',
                     'train_dataloader.dataset.pipeline.9.scale=3'], [
        '--cfg-options does not fit', 'Index 9 exceeds the length of the '
        'list at that key']


def cfg_option_misspelt_argument(tmp, data, w):
    return 'train', [_seg(tmp, data), '--work-dir', str(tmp / 'w'),
                     '--cfg-options', 'model.backbone.archh=small'], [
        'TwinsPCPVT', "'archh'"]


def model_refuses_a_value(tmp, data, w):
    # A value the backbone refuses when it is built (an arch typo).
    return 'train', [_seg(tmp, data), '--work-dir', str(tmp / 'w'),
                     '--cfg-options', 'model.backbone.arch=smal'], [
        'the config does not build', 'TwinsPCPVT', "'smal'"]


def cfg_option_misspelt_loop_key(tmp, data, w):
    return 'train', [_seg(tmp, data), '--work-dir', str(tmp / 'w'),
                     '--cfg-options', 'train_cfg.max_itrs=3'], [
        'IterBasedTrainLoop', "'max_itrs'"]


def unknown_model_type(tmp, data, w):
    return 'train', [_seg(tmp, data), '--work-dir', str(tmp / 'w'),
                     '--cfg-options', 'model.backbone.type=mmtwins.TwinsFoo'
                     ], ["unknown type 'mmtwins.TwinsFoo'", 'not registered']


def amp_on_cpu(tmp, data, w):
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU, AMP is allowed')
    return 'train', [_seg(tmp, data), '--amp', '--work-dir',
                     str(tmp / 'w')], ['--amp needs a GPU']


def pretrained_file_missing(tmp, data, w):
    missing = str(tmp / 'pcpvt_small.pth')
    cfg = _seg(tmp, data, ONE_BLOCK + "model['backbone']['init_cfg'] = dict("
               "_delete_=True, type='Pretrained', "
               f'checkpoint={missing!r})\n')
    return 'train', [cfg, '--work-dir', str(tmp / 'w')], [
        f'pretrained checkpoint (init_cfg.checkpoint) not found: {missing}']


def pretrained_url_unreachable(tmp, data, w):
    url = 'http://127.0.0.1:9/pcpvt_small.pth'  # nothing listens on 9
    cfg = _seg(tmp, data, ONE_BLOCK + "model['backbone']['init_cfg'] = dict("
               f"_delete_=True, type='Pretrained', checkpoint={url!r})\n")
    return 'train', [cfg, '--work-dir', str(tmp / 'w')], [
        f'cannot load pretrained checkpoint (init_cfg.checkpoint) {url}',
        'network']


def det_num_classes_too_small(tmp, data, w):
    cfg = _det(tmp, data,
               ONE_BLOCK + "model['bbox_head'] = dict(num_classes=2)\n")
    return 'train', [cfg, '--work-dir', str(tmp / 'w')], [
        'model.bbox_head.num_classes is 2', 'has 3 classes',
        'num_classes=3']


def seg_num_classes_too_small(tmp, data, w):
    cfg = _seg(tmp, data,
               ONE_BLOCK + "model['decode_head'] = dict(num_classes=3)\n")
    return 'train', [cfg, '--work-dir', str(tmp / 'w')], [
        'model.decode_head.num_classes is 3', 'has 4 classes',
        'num_classes=4']


def zoo_classes_on_other_data(tmp, data, w):
    # The zoo config's COCO classes on data with other class names.
    root = osp.join(data, 'coco') + '/'
    cfg = _det(tmp, data, 'train_dataloader = dict(batch_size=2, '
               'num_workers=0, persistent_workers=False, dataset=dict('
               f'data_root={root!r}, metainfo=None))\n')
    return 'train', [cfg, '--work-dir', str(tmp / 'w')], [
        'train_dataloader.dataset has no sample', 'person',
        'circle, square, triangle', 'metainfo=dict(classes=']


def seg_checkpoint_in_det_config(tmp, data, w):
    return 'test', [_det(tmp, data), w['seg'], '--work-dir',
                    str(tmp / 'w')], [
        f'checkpoint {w["seg"]} does not fit the model', 'missing keys',
        'unexpected keys', 'decode_head', '--allow-partial-load']


def backbone_only_checkpoint(tmp, data, w):
    state = torch.load(w['det'])['state_dict']
    path = str(tmp / 'backbone.pth')
    torch.save({k[9:]: v for k, v in state.items()
                if k.startswith('backbone.')}, path)
    return 'test', [_det(tmp, data), path, '--work-dir', str(tmp / 'w')], [
        f'checkpoint {path} does not fit', 'missing keys: backbone.',
        'unexpected keys: blocks.']


def other_size_checkpoint(tmp, data, w):
    # Another arch of the same family: a block more, a wider stem.
    state = torch.load(w['det'])['state_dict']
    state['backbone.blocks.0.9.norm1.weight'] = torch.ones(64)
    state['backbone.patch_embeds.0.proj.weight'] = torch.zeros(80, 3, 4, 4)
    path = str(tmp / 'other.pth')
    torch.save({'state_dict': state}, path)
    return 'test', [_det(tmp, data), path, '--work-dir', str(tmp / 'w')], [
        '1 unexpected keys: backbone.blocks.0.9.norm1.weight',
        '1 keys with a shape mismatch: backbone.patch_embeds.0.proj.weight '
        '(80, 3, 4, 4) vs (64, 3, 4, 4)']


def malicious_checkpoint(tmp, data, w):
    path = str(tmp / 'evil.pth')
    torch.save({'state_dict': {}, 'x': _Evil()}, path)
    return 'test', [_seg(tmp, data), path, '--work-dir', str(tmp / 'w')], [
        f'refused to load checkpoint {path}', 'allow-list',
        'posix.system']


def text_file_as_checkpoint(tmp, data, w):
    path = tmp / 'notes.pth'
    path.write_text('experiment notes\n')
    return 'test', [_seg(tmp, data), str(path), '--work-dir',
                    str(tmp / 'w')], [f'{path} is not a PyTorch checkpoint']


def truncated_checkpoint(tmp, data, w):
    path = str(tmp / 'cut.pth')
    with open(w['seg'], 'rb') as f:
        head = f.read(100000)
    with open(path, 'wb') as f:
        f.write(head)
    return 'test', [_seg(tmp, data), path, '--work-dir', str(tmp / 'w')], [
        f'cannot read checkpoint {path}', 'truncated']


def resume_nothing_there(tmp, data, w):
    work = str(tmp / 'w')
    return 'train', [_seg(tmp, data), '--work-dir', work, '--resume'], [
        f'nothing to resume in {work}: it has no checkpoint',
        'without --resume']


def resume_empty_last_checkpoint(tmp, data, w):
    work = tmp / 'w'
    work.mkdir()
    (work / 'last_checkpoint').write_text('')
    return 'train', [_seg(tmp, data), '--work-dir', str(work), '--resume'], [
        f'nothing to resume in {work}: none of its 1 checkpoints loads']


def resume_missing_checkpoint(tmp, data, w):
    return 'train', [_seg(tmp, data), '--resume', str(tmp / 'none.pth')], [
        f'checkpoint not found: {tmp}/none.pth']


def resume_weights_only_file(tmp, data, w):
    return 'train', [_seg(tmp, data), '--work-dir', str(tmp / 'w'),
                     '--resume', w['seg']], [
        f'cannot resume from {w["seg"]}: it has no training state',
        f'load_from={w["seg"]}']


def resume_checkpoint_of_other_model(tmp, data, w):
    return 'train', [_seg(tmp, data), '--work-dir', str(tmp / 'w'),
                     '--resume', w['det_train']], [
        f'checkpoint {w["det_train"]} does not fit the model',
        'missing keys: decode_head']


def convert_text_file(tmp, data, w):
    src = tmp / 'readme.pth'
    src.write_text('experiment notes\n')
    return 'convert', [str(src), str(tmp / 'out.pth')], [
        f'{src} is not a PyTorch checkpoint']


def convert_into_missing_folder(tmp, data, w):
    dst = str(tmp / 'no_dir' / 'out.pth')
    return 'convert', [w['seg'], dst], [
        f'output folder does not exist: {tmp}/no_dir']


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned',))


CASES = [
    missing_config, config_syntax_error, config_missing_base,
    wrong_default_scope, missing_dataset_folder, missing_annotation_file,
    missing_segmentation_folder, truncated_annotation_json, zero_byte_image,
    zero_byte_label, missing_checkpoint, unwritable_work_dir,
    cfg_option_bad_index, cfg_option_misspelt_argument, model_refuses_a_value,
    cfg_option_misspelt_loop_key, unknown_model_type, amp_on_cpu,
    pretrained_file_missing, pretrained_url_unreachable,
    det_num_classes_too_small, seg_num_classes_too_small,
    zoo_classes_on_other_data, seg_checkpoint_in_det_config,
    backbone_only_checkpoint, other_size_checkpoint, malicious_checkpoint,
    text_file_as_checkpoint, truncated_checkpoint, resume_nothing_there,
    resume_empty_last_checkpoint, resume_missing_checkpoint,
    resume_weights_only_file, resume_checkpoint_of_other_model,
    convert_text_file, convert_into_missing_folder
]


@pytest.fixture(scope='module')
def weights(det_weights, seg_weights, tmp_path_factory):
    checkpoint = torch.load(det_weights)
    # looks like a training run
    checkpoint['meta'] = dict(epoch=1, iter=1)
    checkpoint['message_hub'] = {}
    det_train = str(tmp_path_factory.mktemp('ckpt') / 'det_train.pth')
    torch.save(checkpoint, det_train)
    return dict(det=det_weights, seg=seg_weights, det_train=det_train)


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.__name__)
def test_one_clear_line(case, capsys, tmp_path, data, weights):
    tool, argv, fragments = case(tmp_path, data, weights)
    msg = _error(capsys, tool, argv)
    print(f'{case.__name__}: {msg}')  # shown with pytest -rP
    for fragment in fragments:
        assert fragment in msg, msg


def test_resume_skip_warning_names_the_file(capsys, tmp_path, data):
    work = tmp_path / 'w'
    work.mkdir()
    (work / 'last_checkpoint').write_text(str(work / 'iter_9.pth'))
    msg = _error(capsys, 'train', [_seg(tmp_path, data), '--work-dir',
                                   str(work), '--resume'])
    assert 'nothing to resume' in msg


@pytest.mark.parametrize('how', ['flag', 'env'])
def test_debug_shows_the_traceback(how, capsys, tmp_path, monkeypatch):
    """The traceback comes above the same line; the exit status stays 2."""
    argv = [str(tmp_path / 'nope.py')]
    if how == 'flag':
        argv.append('--debug')
    else:
        monkeypatch.setenv('MMTWINS_DEBUG', '1')
    code, err = _run(capsys, 'train', argv)
    assert code == 2
    assert 'Traceback' in err and 'ToolError' in err
    assert err.strip().splitlines()[-1] == (
        f'error: config file not found: {tmp_path}/nope.py')


def test_new_cfg_option_keys_are_accepted(capsys, tmp_path, mini):
    """mmengine accepts new keys; so do the tools, naming them once."""
    from tools.cli.config_checks import load_config
    cfg = load_config(_seg(tmp_path, mini), {
        'optim_wrapper.paramwise_cfg.norm_decay_mult': 0.0,
        'model.backbone.frozen_stages': 1,
        'train_dataloader.dataset.pipeline.1.reduce_zero_label': False,
        'load_from': 'x.pth'})
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    assert cfg.model.backbone.frozen_stages == 1
    err = capsys.readouterr().err
    assert 'optim_wrapper.paramwise_cfg.norm_decay_mult' in err
    assert 'reduce_zero_label' not in err  # the key exists already


def test_allow_partial_load_evaluates(capsys, tmp_path, mini, weights):
    """The flag that loads a checkpoint that does not fit, on purpose."""
    state = torch.load(weights['seg'])['state_dict']
    state.pop('decode_head.conv_seg.bias')
    path = str(tmp_path / 'partial.pth')
    torch.save({'state_dict': state}, path)
    work = str(tmp_path / 'w')
    test_tool.main([_seg(tmp_path, mini), path, '--work-dir', work,
                    '--allow-partial-load'])
    err = capsys.readouterr().err
    assert '1 missing keys: decode_head.conv_seg.bias' in err
    assert osp.isfile(osp.join(work, 'metrics.json'))


def test_dist_train_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(('', 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run(
            ['bash', 'tools/dist_train.sh', 'cfg.py', '2'], cwd=REPO,
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PORT=str(port)))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f'error: port {port} on 127.0.0.1 is in use; set PORT to a free '
        'port, or leave it unset to pick one')


def test_annotation_json_check_names_the_first_bad_file(tmp_path, mini):
    """The JSON diagnosis reads the config's annotation files only after
    a failure, and names the bad one."""
    from mmengine.config import Config

    from tools.cli.data_checks import invalid_json
    from tools.cli.errors import ErrorContext
    data = shutil.copytree(mini, str(tmp_path / 'data'))
    ann = osp.join(data, 'coco', 'annotations', 'instances_val2017.json')
    with open(ann, 'a') as f:
        f.write(',')
    ctx = ErrorContext()
    ctx.cfg = Config.fromfile(_det(tmp_path, data))
    try:
        json.loads('{')
    except json.JSONDecodeError as exc:
        assert ann in invalid_json(exc, ctx)
