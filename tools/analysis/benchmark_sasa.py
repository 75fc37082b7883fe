"""Benchmark the SASA layer against the straightforward unfold reference.

For each case this builds one :class:`mmtwins.models.SASAttention` and runs
the same parameters through the layer ("ours") and through the unfold
reference in ``tests/test_models/sasa_reference.py`` ("unfold"), forward
plus backward (input and parameter gradients), and prints one table:

- latency: the median over ``--repeats`` timed runs, the two
  implementations interleaved run by run (after one warm-up each) so that
  load changes on the machine hit both alike;
- added peak memory: the highest amount of tensor memory held at any
  moment of one forward+backward, above what was allocated before it
  (input, parameters and the incoming gradient are excluded). On CUDA it
  comes from ``torch.cuda.max_memory_allocated``. On CPU PyTorch keeps no
  allocator statistics, so the run is recorded by the PyTorch profiler
  with ``profile_memory=True`` and its allocation and free events are
  replayed in time order; the peak of the running sum is the same
  quantity as on CUDA, counted over every tensor PyTorch allocates
  (temporaries included), not the process RSS;
- the largest absolute difference between the two outputs.

Cases: ``issue`` is the size named in the SASA issue (2 x 64 x 112 x 168,
8 heads, k=7). The ``det-*`` cases are the attention layers of a
SASA-ResNet-50 RetinaNet for an ``--input-size`` image: the stage-1 layer,
the strided first layers of stages 2-4 (attention at the pre-pool
resolution) and the FPN/head layer at P3.

Example::

    python tools/analysis/benchmark_sasa.py
    python tools/analysis/benchmark_sasa.py --device cuda --batch 2 \
        --input-size 800 1344
"""
import argparse
import os.path as osp
import platform
import sys
from typing import Callable, List, NamedTuple, Tuple

import torch
from torch import Tensor

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_models'))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from bench_utils import median, peak_memory, time_once  # noqa: E402
from sasa_reference import unfold_sasa_layer  # noqa: E402

from mmtwins.models.layers import SASAttention  # noqa: E402


class Case(NamedTuple):
    name: str
    batch: int
    channels: int
    height: int
    width: int
    stride: int


def build_cases(names: List[str], batch: int,
                input_size: Tuple[int, int]) -> List[Case]:
    """The issue case and the detection cases for an input size."""
    height, width = input_size
    cases = []
    if 'issue' in names:
        cases.append(Case('issue', 2, 64, 112, 168, 1))
    if 'det' in names:
        for name, channels, stride_in, stride in (
            ('det-stage1', 64, 4, 1),
            ('det-stage2-down', 128, 4, 2),
            ('det-stage3-down', 256, 8, 2),
            ('det-stage4-down', 512, 16, 2),
            ('det-fpn-p3', 256, 8, 1),
        ):
            cases.append(
                Case(name, batch, channels, -(-height // stride_in),
                     -(-width // stride_in), stride))
    return cases


def _step(fn: Callable[[Tensor], Tensor], x: Tensor, layer: SASAttention,
          grad: Tensor) -> Tensor:
    """One forward and backward; gradients are dropped afterwards."""
    out = fn(x)
    out.backward(grad)
    x.grad = None
    for param in layer.parameters():
        param.grad = None
    return out.detach()


def run_case(case: Case, device: torch.device, repeats: int,
             kernel_size: int, num_heads: int) -> dict:
    """Time and measure ours and the reference on one case."""
    torch.manual_seed(0)
    layer = SASAttention(case.channels, case.channels, kernel_size,
                         num_heads, case.stride).to(device)
    x = torch.randn(case.batch, case.channels, case.height, case.width,
                    device=device, requires_grad=True)
    with torch.no_grad():
        grad = torch.randn_like(layer(x))
    impls = {'ours': layer, 'unfold': lambda t: unfold_sasa_layer(layer, t)}

    outputs = {}
    for name, fn in impls.items():  # warm-up, and the outputs to compare
        outputs[name] = _step(fn, x, layer, grad)
    max_diff = (outputs['ours'] - outputs['unfold']).abs().max().item()
    del outputs

    times = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            times[name].append(
                time_once(lambda fn=fn: _step(fn, x, layer, grad), device))
    memory = {
        name: peak_memory(lambda fn=fn: _step(fn, x, layer, grad), device)
        for name, fn in impls.items()
    }
    return dict(
        case=case,
        ms={name: 1e3 * median(ts)
            for name, ts in times.items()},
        mib={name: value / 2**20
             for name, value in memory.items()},
        max_diff=max_diff)


def describe_device(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'{platform.processor() or platform.machine()}, '
            f'{torch.get_num_threads()} threads')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cases', nargs='+', default=['issue', 'det'],
                        choices=['issue', 'det'])
    parser.add_argument('--batch', type=int, default=1,
                        help='batch of the detection cases')
    parser.add_argument('--input-size', type=int, nargs=2,
                        default=(640, 640), metavar=('H', 'W'),
                        help='image size of the detection cases')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--kernel-size', type=int, default=7)
    parser.add_argument('--num-heads', type=int, default=8)
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (default: PyTorch\'s choice); 1 '
                        'gives steadier numbers on a machine shared with '
                        'other work')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda given but CUDA is not available')

    print(f'SASA layer, forward+backward, fp32, k={args.kernel_size}, '
          f'{args.num_heads} heads; {describe_device(device)}; '
          f'torch {torch.__version__}; median of {args.repeats}')
    header = ('case', 'B x C x H x W', 'stride', 'ours ms', 'unfold ms',
              'speed-up', 'ours MiB', 'unfold MiB', 'mem ratio', 'max diff')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for case in build_cases(args.cases, args.batch, tuple(args.input_size)):
        result = run_case(case, device, args.repeats, args.kernel_size,
                          args.num_heads)
        ms, mib = result['ms'], result['mib']
        row = (case.name,
               f'{case.batch}x{case.channels}x{case.height}x{case.width}',
               str(case.stride), f'{ms["ours"]:.1f}', f'{ms["unfold"]:.1f}',
               f'{ms["unfold"] / ms["ours"]:.1f}x', f'{mib["ours"]:.1f}',
               f'{mib["unfold"]:.1f}', f'{mib["unfold"] / mib["ours"]:.1f}x',
               f'{result["max_diff"]:.1e}')
        print('| ' + ' | '.join(row) + ' |', flush=True)


if __name__ == '__main__':
    main()
