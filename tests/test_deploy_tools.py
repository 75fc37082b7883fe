"""The deployment tools on the mini datasets: ``pytorch2onnx.py`` writes
an end-to-end file, ``tools/test.py CONFIG MODEL.onnx`` evaluates it with
the same metrics and predictions as the checkpoint it came from, and
``tools/infer.py`` runs it; bad inputs end in one ``error:`` line."""
import json
import os.path as osp

import mmcv
import pytest
import torch
from deploy_helpers import DET_TINY, SEG_TINY, build
from mmengine.fileio import load
from tools_helpers import load_tool, make_mini, run_tool, write_config

from mmtwins.deploy.parity import match_detections

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 2, 3)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _one_error_line(proc, *words):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith('error: ')]
    assert len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def _export(tmp, task, mini, capsys):
    cfg = write_config(osp.join(tmp, f'{task}.py'), task, mini,
                       extra=DET_TINY if task == 'detection' else SEG_TINY)
    ckpt = osp.join(tmp, f'{task}.pth')
    torch.save({'state_dict': build(cfg).state_dict()}, ckpt)
    onnx_file = osp.join(tmp, f'{task}.onnx')
    tool = load_tool('deployment/pytorch2onnx.py')
    with pytest.raises(SystemExit) as info:
        tool.main([cfg, ckpt, '--out', onnx_file])
    out = capsys.readouterr().out
    assert info.value.code == 0, out
    assert out.count(': ok') == 4, out  # 3 sizes, batch 2
    return cfg, ckpt, onnx_file


def _test(cfg, model, work, *extra):
    _ok(run_tool(['tools/test.py', cfg, model, '--work-dir', work, *extra]))
    with open(osp.join(work, 'metrics.json')) as f:
        return json.load(f)


def test_detection_onnx_evaluates_like_its_checkpoint(tmp_path, mini,
                                                      capsys):
    tmp = str(tmp_path)
    cfg, ckpt, onnx_file = _export(tmp, 'detection', mini, capsys)
    ref = _test(cfg, ckpt, osp.join(tmp, 'ckpt'), '--out',
                osp.join(tmp, 'ckpt.pkl'))
    got = _test(cfg, onnx_file, osp.join(tmp, 'onnx'), '--out',
                osp.join(tmp, 'onnx.pkl'), '--show-dir',
                osp.join(tmp, 'vis'))
    assert got['summary'] == pytest.approx(ref['summary'], abs=2e-3)
    ref_preds = load(osp.join(tmp, 'ckpt.pkl'))
    got_preds = load(osp.join(tmp, 'onnx.pkl'))
    assert len(ref_preds) == len(got_preds) == 3
    # Same labels and boxes (IoU >= 0.99). The random weights put many
    # overlapping boxes near the score and IoU thresholds, where float
    # differences between onnxruntime's and PyTorch's kernels may flip one.
    total = matched = extra = 0
    for a, b in zip(ref_preds, got_preds):
        a, b = a['pred_instances'], b['pred_instances']
        agree = match_detections(a['bboxes'].numpy(), a['labels'].numpy(),
                                 b['bboxes'].numpy(), b['labels'].numpy())
        total += agree.reference
        matched += agree.matched
        extra += agree.extra
    assert total > 0
    assert matched >= 0.95 * total and extra <= 0.05 * total
    assert len(list((tmp_path / 'vis').rglob('*.jpg'))) == 3

    # infer.py: pictures and per-image JSON as with a checkpoint
    images = osp.join(mini, 'coco', 'val2017')
    out = osp.join(tmp, 'infer')
    _ok(run_tool(['tools/infer.py', cfg, onnx_file, images, '--out-dir',
                  out]))
    jsons = sorted((tmp_path / 'infer' / 'preds').glob('*.json'))
    assert len(jsons) == 3
    pred = json.loads(jsons[0].read_text())
    assert {'bboxes', 'labels', 'scores', 'classes'} <= set(pred)

    # bad inputs: one error line each
    _one_error_line(run_tool(['tools/infer.py', cfg, onnx_file, cfg]),
                    'cannot read', 'as an image')
    work = ['--work-dir', osp.join(tmp, 'errors')]
    _one_error_line(run_tool(['tools/test.py', cfg,
                              osp.join(tmp, 'missing.onnx'), *work]),
                    'missing.onnx')
    foreign = osp.join(tmp, 'foreign.onnx')
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.randn(1, 2), ),
                      foreign, dynamo=True)
    _one_error_line(run_tool(['tools/test.py', cfg, foreign, *work]),
                    'foreign.onnx', 'pytorch2onnx.py')
    other = write_config(osp.join(tmp, 'other.py'), 'detection', mini,
                         extra=DET_TINY + 'model.update(bbox_head=dict('
                         'num_classes=4))\n')
    _one_error_line(run_tool(['tools/test.py', other, onnx_file, *work]),
                    'exported from', 'other.py')
    _one_error_line(run_tool([
        'tools/deployment/pytorch2onnx.py', cfg, '--out',
        osp.join(tmp, 'x.onnx'), '--cfg-options',
        'model.test_cfg.nms.type=soft_nms']), 'soft_nms')


def test_segmentation_onnx_evaluates_like_its_checkpoint(tmp_path, mini,
                                                         capsys):
    tmp = str(tmp_path)
    cfg, ckpt, onnx_file = _export(tmp, 'segmentation', mini, capsys)
    ref = _test(cfg, ckpt, osp.join(tmp, 'ckpt'), '--out',
                osp.join(tmp, 'ckpt_maps'))
    got = _test(cfg, onnx_file, osp.join(tmp, 'onnx'), '--out',
                osp.join(tmp, 'onnx_maps'))
    assert got['summary'] == pytest.approx(ref['summary'], abs=2e-3)
    maps = sorted((tmp_path / 'onnx_maps').glob('*.png'))
    assert len(maps) == 3
    for path in maps:
        a = mmcv.imread(str(path), 'unchanged')
        b = mmcv.imread(str(tmp_path / 'ckpt_maps' / path.name), 'unchanged')
        assert (a == b).mean() >= 0.999


def test_int8_file_quantises_weights_and_keeps_attention_fp32(tmp_path,
                                                               mini,
                                                               capsys):
    import onnx
    tmp = str(tmp_path)
    cfg = write_config(osp.join(tmp, 'segmentation.py'), 'segmentation',
                       mini, extra=SEG_TINY)
    onnx_file = osp.join(tmp, 'seg.onnx')
    tool = load_tool('deployment/pytorch2onnx.py')
    with pytest.raises(SystemExit) as info:
        tool.main([cfg, '--out', onnx_file, '--int8', '--calib', '2'])
    out = capsys.readouterr().out
    assert info.value.code == 0, out
    int8 = osp.join(tmp, 'seg_int8.onnx')
    assert f'int8: quantised to {int8}' in out, out
    assert 'calibrated on 2 training images' in out, out

    graph = onnx.load(int8).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert convs and all(producer.get(n.input[1]) == 'DequantizeLinear'
                         for n in convs)
    # Attention: the softmax and both activation products stay fp32.
    softmaxes = [n for n in graph.node if n.op_type == 'Softmax']
    assert softmaxes
    for node in softmaxes:
        assert producer.get(node.input[0]) != 'DequantizeLinear'
        assert 'QuantizeLinear' not in consumers.get(node.output[0], [])
    weights = {i.name for i in graph.initializer}
    products = [n for n in graph.node if n.op_type == 'MatMul'
                and producer.get(n.input[1]) != 'DequantizeLinear'
                and n.input[1] not in weights]
    assert len(products) == 2 * len(softmaxes)
    for node in products:
        assert all(producer.get(i) != 'DequantizeLinear' for i in node.input)
    assert any(m.key == 'mmtwins.fingerprint' for m in
               onnx.load(int8, load_external_data=False).metadata_props)

    metrics = _test(cfg, int8, osp.join(tmp, 'int8'))
    assert 'mIoU' in metrics['summary'], metrics


SASA_SEG_CFG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                        'configs', 'quickstart',
                        'fpn_sasa_r26_convstem_mini_ade.py')
SASA_SEG_TINY = """
model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    decode_head=dict(in_channels=[32, 32, 32, 32], channels=32))
"""


def test_sasa_kernel_file_evaluates_like_its_checkpoint(tmp_path, mini,
                                                        capsys):
    """--sasa-kernel: SASA as mmtwins' onnxruntime operator; the tools
    register its library, and tools/test.py gives the checkpoint's mIoU."""
    import onnx
    tmp = str(tmp_path)
    cfg = write_config(osp.join(tmp, 'sasa.py'), 'segmentation', mini,
                       extra=SASA_SEG_TINY, base=SASA_SEG_CFG)
    ckpt = osp.join(tmp, 'sasa.pth')
    torch.save({'state_dict': build(cfg).state_dict()}, ckpt)
    onnx_file = osp.join(tmp, 'sasa.onnx')
    tool = load_tool('deployment/pytorch2onnx.py')
    with pytest.raises(SystemExit) as info:
        tool.main([cfg, ckpt, '--out', onnx_file, '--sasa-kernel'])
    out = capsys.readouterr().out
    assert info.value.code == 0, out
    assert out.count(': ok') == 4, out
    nodes = sum(n.op_type == 'SASAttention'
                for n in onnx.load(onnx_file).graph.node)
    assert f'SASA attention: {nodes} mmtwins.SASAttention nodes' in out, out
    ref = _test(cfg, ckpt, osp.join(tmp, 'ckpt'))
    got = _test(cfg, onnx_file, osp.join(tmp, 'onnx'))
    assert got['summary'] == pytest.approx(ref['summary'], abs=1e-3)

    refused = run_tool(['tools/deployment/pytorch2onnx.py', cfg,
                        '--backbone-only', '--sasa-kernel'])
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        'pytorch2onnx.py: error: --sasa-kernel applies to the end-to-end '
        'file; leave out --backbone-only/--tensor-forward')
