"""ONNX export (dynamo exporter, dynamic height and width) of the Twins
backbones, checked with onnxruntime at the export size and at other sizes
from the same file, and the export tool on a quickstart config."""
import re

import onnxruntime as ort
import pytest
import torch
from torch.export import Dim
from twins_tiny import TINY, TINY_SVT

from mmtwins.models import TwinsPCPVT, TwinsSVT

# Export at 128x160 (token maps 32x40 ... 4x5: LSA pads on both sides);
# check at sizes that pad on one side only (224x256: 56x64 -> width pads),
# on neither side in the first stage (224x224) and odd sizes (97x131).
EXPORT = (128, 160)
OTHERS = [(224, 256), (224, 224), (97, 131)]


def rel_diff(got, ref) -> float:
    return ((torch.from_numpy(got) - ref).abs().max() /
            ref.abs().max()).item()


@pytest.mark.parametrize('cls,arch,kwargs', [
    (TwinsPCPVT, TINY, dict(patch_rounding='ceil')),
    (TwinsSVT, TINY_SVT, dict(lsa_pad='mask')),
    pytest.param(TwinsSVT, TINY_SVT,
                 dict(lsa_pad='mmseg', patch_rounding='ceil'),
                 marks=pytest.mark.slow),
], ids=['pcpvt', 'svt-mask', 'svt-mmseg'])
def test_one_dynamic_file_matches_eager_at_several_sizes(
        cls, arch, kwargs, tmp_path):
    model = cls(arch, **kwargs).eval()
    for p in model.parameters():  # non-trivial biases/norms
        p.data.add_(torch.randn_like(p) * 0.05)
    path = str(tmp_path / 'model.onnx')
    torch.onnx.export(
        model, (torch.randn(1, 3, *EXPORT), ), path, dynamo=True,
        dynamic_shapes=({2: Dim('h', min=32, max=1024),
                         3: Dim('w', min=32, max=1024)}, ))
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    for size in [EXPORT] + OTHERS:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            refs = model(x)
        got = session.run(None, {name: x.numpy()})
        assert len(got) == len(refs) == 4
        for a, b in zip(got, refs):
            assert a.shape == tuple(b.shape), size
            assert rel_diff(a, b) <= 1e-4, size


@pytest.mark.slow
def test_export_tool_on_quickstart_config(tmp_path, capsys):
    from tools_helpers import DET_CFG, load_tool
    tool = load_tool('deployment/pytorch2onnx.py')
    with pytest.raises(SystemExit) as exit_info:
        tool.main([DET_CFG, '--shape', '128', '160', '--dynamic',
                   '--check-shape', '96', '224', '--backbone-only',
                   '--out-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    rows = re.findall(r'(\d+)x(\d+): 4 outputs, largest difference '
                      r'\S+ abs, (\S+) relative: ok', out)
    assert [(int(h), int(w)) for h, w, _ in rows] == [(128, 160), (96, 224)]
    assert all(float(r) <= 1e-4 for *_, r in rows)
    assert (tmp_path / 'retinanet_twins_pcpvt_s_mini_coco_backbone.onnx'
            ).is_file()


def test_export_tool_refuses_in_one_line(tmp_path, capsys):
    """A model whose forward cannot be traced is refused with one
    ``error:`` line (exit status 2), not a traceback or a wrong file."""
    from tools_helpers import load_tool
    tool = load_tool('deployment/pytorch2onnx.py')

    class Untraceable(torch.nn.Module):

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return x * 2
            return x

    with pytest.raises(tool.Unexportable, match='^[^\n]+$'):
        tool.export(Untraceable(), torch.randn(1, 3, 64, 64),
                    str(tmp_path / 'x.onnx'), dynamic=True, min_size=32)
