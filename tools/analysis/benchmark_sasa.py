"""Benchmark the SASA layer (against unfold) and SASA-ResNet-50 (against a
convolutional ResNet-50).

Layer (``--cases``):

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

Cases: ``base`` is one mid-sized layer (2 x 64 x 112 x 168, 8 heads,
k=7). The ``det-*`` cases are the attention layers of a
SASA-ResNet-50 RetinaNet for an ``--input-size`` image: the stage-1 layer,
the strided first layers of stages 2-4 (attention at the pre-pool
resolution) and the FPN/head layer at P3.

With ``--rss`` each case also runs once per implementation in a fresh
child process, which reports its peak resident set size above the baseline
it had before the forward+backward (what the allocator really took from the
system, caching included). The child first runs one step on an 8x8 map, so
that loading libraries and starting thread pools come before the baseline.

Network (``--network``): one training step (forward + backward of the sum
of the outputs, ``train()`` mode with mmdet's default ``norm_eval``) of
``SASAResNet(depth=50)`` and of mmdet's ``ResNet(depth=50)`` at
``--network-size``, interleaved (one warm-up each, then ``--pairs`` pairs);
the ratio is the median of the paired ratios. The eval forward (no grad)
is compared the same way. The same comparison follows for each backbone
under MMSegmentation's ``FPN`` neck (``in_channels=[256, 512, 1024,
2048]``, 256 channels, 4 outputs: the neck of the ``fpn_r50`` segmentation
recipe). ``--compile`` adds ``torch.compile`` of the SASA networks
(inductor) beside their eager runs.

CPU memory (``--malloc``): timed runs first make glibc keep freed memory
for reuse (:mod:`mmtwins.utils.cpu_memory`), so no step page-faults fresh
memory and neither side pays for the other's allocation history, as in
``benchmark_backbone.py``; ``--malloc default`` keeps glibc's policy. The
``--rss`` children always run under glibc's default.

Example::

    OMP_WAIT_POLICY=PASSIVE python tools/analysis/benchmark_sasa.py \
        --no-layer --network --pairs 5
    python tools/analysis/benchmark_sasa.py --cases base --rss
    python tools/analysis/benchmark_sasa.py --device cuda --batch 2 \
        --input-size 800 1344
"""
import argparse
import copy
import json
import os.path as osp
import subprocess
import sys
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_models'))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from bench_utils import (  # noqa: E402
    add_malloc_argument,
    machine,
    median,
    peak_memory,
    time_once,
)
from sasa_reference import unfold_sasa_layer  # noqa: E402

from mmtwins.models.layers import SASAttention  # noqa: E402
from mmtwins.utils.cpu_memory import set_malloc_policy  # noqa: E402


class Case(NamedTuple):
    name: str
    batch: int
    channels: int
    height: int
    width: int
    stride: int


def build_cases(names: List[str], batch: int,
                input_size: Tuple[int, int]) -> List[Case]:
    """The base case and the detection cases for an input size."""
    height, width = input_size
    cases = []
    if 'base' in names:
        cases.append(Case('base', 2, 64, 112, 168, 1))
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


# Targets: the layer at least this much faster and leaner than the unfold
# reference; SASA-ResNet-50's training step and forward at most this
# multiple of ResNet-50's (with or without the FPN neck).
TARGET_LAYER = 10.0
TARGET_NETWORK = 1.1


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


def _rss_bytes(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process, in bytes."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'no {field} in /proc/self/status')


def child_rss(impl: str, case: Case, kernel_size: int,
              num_heads: int) -> None:
    """In a fresh process: print the peak RSS added by one fwd+bwd."""
    torch.manual_seed(0)
    layer = SASAttention(case.channels, case.channels, kernel_size,
                         num_heads, case.stride)
    x = torch.randn(case.batch, case.channels, case.height, case.width,
                    requires_grad=True)
    grad = torch.randn(case.batch, case.channels,
                       -(-case.height // case.stride),
                       -(-case.width // case.stride))
    fn = layer if impl == 'ours' else (
        lambda t: unfold_sasa_layer(layer, t))
    # One step on a tiny map first, so that loading libraries (the SASA
    # CPU kernel, oneDNN) and starting thread pools fall before the
    # baseline and only the layer's own memory is counted.
    tiny = torch.randn(1, case.channels, 8, 8, requires_grad=True)
    with torch.no_grad():
        tiny_grad = torch.ones_like(fn(tiny))
    _step(fn, tiny, layer, tiny_grad)
    base = _rss_bytes('VmRSS')
    _step(fn, x, layer, grad)
    print(json.dumps({'added': _rss_bytes('VmHWM') - base}))


def rss_in_child(impl: str, case: Case, args: argparse.Namespace) -> float:
    """MiB of peak RSS one fwd+bwd adds, measured in a child process."""
    command = [
        sys.executable,
        osp.abspath(__file__), '--child-rss', impl,
        json.dumps(case._asdict()), '--kernel-size',
        str(args.kernel_size), '--num-heads',
        str(args.num_heads)
    ]
    if args.threads is not None:
        command += ['--threads', str(args.threads)]
    output = subprocess.run(
        command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])['added'] / 2**20


def _train_step(model: torch.nn.Module, x: Tensor) -> None:
    outs = model(x)
    sum(out.sum() for out in outs).backward()
    for param in model.parameters():
        param.grad = None


def _forward(model: torch.nn.Module, x: Tensor) -> None:
    with torch.no_grad():
        model(x)


def _paired(fns: Dict[str, Callable[[], None]], pairs: int,
            device: torch.device) -> Dict[str, List[float]]:
    """Seconds per call, the functions interleaved, one warm-up each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(pairs):
        for name, fn in fns.items():
            times[name].append(time_once(fn, device))
    return times


def _ratio(times: Dict[str, List[float]], a: str, b: str) -> float:
    """Median over pairs of ``time(a) / time(b)``."""
    return median([x / y for x, y in zip(times[a], times[b])])


class _WithNeck(torch.nn.Module):
    """A backbone followed by a neck, as a segmentor's ``extract_feat``."""

    def __init__(self, backbone: torch.nn.Module,
                 neck: torch.nn.Module) -> None:
        super().__init__()
        self.backbone, self.neck = backbone, neck

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.neck(self.backbone(x)))


def _networks() -> List[Tuple[str, Dict[str, torch.nn.Module]]]:
    """``(name, {'sasa': ..., 'conv': ...})`` for the two comparisons."""
    from mmdet.models.backbones import ResNet
    from mmseg.models.necks import FPN

    from mmtwins.models.backbones import SASAResNet

    def fpn() -> torch.nn.Module:
        return FPN([256, 512, 1024, 2048], 256, 4)

    torch.manual_seed(0)
    return [
        ('ResNet-50', dict(sasa=SASAResNet(depth=50),
                           conv=ResNet(depth=50))),
        ('ResNet-50 + FPN',
         dict(sasa=_WithNeck(SASAResNet(depth=50), fpn()),
              conv=_WithNeck(ResNet(depth=50), fpn()))),
    ]


def run_network(args: argparse.Namespace,
                device: torch.device) -> List[str]:
    """SASA-ResNet-50 against mmdet's ResNet-50, alone and under an FPN
    neck (module docstring); returns the target lines."""
    x = torch.randn(1, 3, *args.network_size, device=device)
    print(f'\nNetworks, 1x3x{args.network_size[0]}x{args.network_size[1]}, '
          f'{describe_device(device)}; {args.pairs} interleaved pairs, '
          'median of paired ratios')
    print('| network | mode | sasa ms | conv ms | sasa / conv |' +
          (' sasa compiled ms | compiled / eager |' if args.compile
           else ''))
    print('|---|---|---|---|---|' + ('---|---|' if args.compile else ''))
    targets = []
    for network, models in _networks():
        models = {name: model.to(device) for name, model in models.items()}
        if args.compile:
            models['sasa-compiled'] = torch.compile(
                copy.deepcopy(models['sasa']))
        for mode, step in (('train step (fwd+bwd)', _train_step),
                           ('forward (eval)', _forward)):
            for model in models.values():
                model.train(mode.startswith('train'))
            times = _paired({
                name: (lambda m=model, step=step: step(m, x))
                for name, model in models.items()
            }, args.pairs, device)
            ratio = _ratio(times, 'sasa', 'conv')
            row = [network, mode] + [
                f'{1e3 * median(times[name]):.0f}'
                for name in ('sasa', 'conv')
            ] + [f'{ratio:.2f}x']
            if args.compile:
                row += [f'{1e3 * median(times["sasa-compiled"]):.0f}',
                        f'{_ratio(times, "sasa-compiled", "sasa"):.2f}x']
            print('| ' + ' | '.join(row) + ' |', flush=True)
            what = mode.split(' (')[0]
            targets.append(
                f'SASA-{network} {what} <= {TARGET_NETWORK}x {network} '
                f'({ratio:.2f}x): {_verdict(ratio <= TARGET_NETWORK)}')
        del models
    return targets


def describe_device(device: torch.device) -> str:
    """The processor and the SASA implementation that runs on it."""
    from mmtwins.ops import sasa_cpu, sasa_op
    probe = torch.empty(0, device=device)
    kernels = sasa_op._fused_kernels(probe)
    if kernels is sasa_cpu:
        impl = 'fused C++ CPU kernel'
    elif kernels is not None:
        impl = 'Triton kernels'
    else:
        impl = 'offset loop (no fused kernel for this device)'
    return f'{machine(device)}; SASA op: {impl}'


def _verdict(ok: bool) -> str:
    return 'met' if ok else 'NOT met'


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cases', nargs='+', default=['base', 'det'],
                        choices=['base', 'det'])
    parser.add_argument('--batch', type=int, default=1,
                        help='batch of the detection cases')
    parser.add_argument('--input-size', type=int, nargs=2,
                        default=(640, 640), metavar=('H', 'W'),
                        help='image size of the detection cases')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--kernel-size', type=int, default=7)
    parser.add_argument('--num-heads', type=int, default=8)
    parser.add_argument('--rss', action='store_true',
                        help='also measure peak RSS in child processes')
    parser.add_argument('--network', action='store_true',
                        help='also compare SASA-ResNet-50 with ResNet-50, '
                        'alone and under an FPN neck')
    parser.add_argument('--network-size', type=int, nargs=2,
                        default=(512, 512), metavar=('H', 'W'))
    parser.add_argument('--pairs', type=int, default=5,
                        help='interleaved pairs of the network comparison')
    parser.add_argument('--compile', action='store_true',
                        help='add torch.compile of the SASA network')
    parser.add_argument('--no-layer', action='store_true',
                        help='skip the layer table')
    parser.add_argument('--child-rss', nargs=2, metavar=('IMPL', 'CASE'),
                        help=argparse.SUPPRESS)
    add_malloc_argument(parser)  # the --rss children keep glibc's default
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (default: PyTorch\'s choice); 1 '
                        'gives steadier numbers on a machine shared with '
                        'other work')
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child_rss:
        impl, case = args.child_rss
        child_rss(impl, Case(**json.loads(case)), args.kernel_size,
                  args.num_heads)
        return
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda given but CUDA is not available')
    if args.rss and device.type != 'cpu':
        parser.error('--rss measures CPU memory; use it with --device cpu')
    print(f'# {set_malloc_policy(args.malloc)}')

    targets: List[str] = []
    if not args.no_layer:
        print(f'SASA layer, forward+backward, fp32, k={args.kernel_size}, '
              f'{args.num_heads} heads; {describe_device(device)}; '
              f'torch {torch.__version__}; median of {args.repeats}')
        header = ['case', 'B x C x H x W', 'stride', 'ours ms', 'unfold ms',
                  'speed-up', 'ours MiB', 'unfold MiB', 'mem ratio']
        if args.rss:
            header += ['ours RSS MiB', 'unfold RSS MiB', 'RSS ratio']
        header.append('max diff')
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for case in build_cases(args.cases, args.batch,
                                tuple(args.input_size)):
            result = run_case(case, device, args.repeats, args.kernel_size,
                              args.num_heads)
            ms, mib = result['ms'], result['mib']
            row = [case.name,
                   f'{case.batch}x{case.channels}x{case.height}x'
                   f'{case.width}', str(case.stride), f'{ms["ours"]:.1f}',
                   f'{ms["unfold"]:.1f}',
                   f'{ms["unfold"] / ms["ours"]:.1f}x',
                   f'{mib["ours"]:.1f}', f'{mib["unfold"]:.1f}',
                   f'{mib["unfold"] / mib["ours"]:.1f}x']
            if args.rss:
                rss = {impl: rss_in_child(impl, case, args)
                       for impl in ('ours', 'unfold')}
                row += [f'{rss["ours"]:.0f}', f'{rss["unfold"]:.0f}',
                        f'{rss["unfold"] / rss["ours"]:.1f}x']
            row.append(f'{result["max_diff"]:.1e}')
            print('| ' + ' | '.join(row) + ' |', flush=True)
            if case.name == 'base':
                speed = ms['unfold'] / ms['ours']
                lean = mib['unfold'] / mib['ours']
                targets.append(
                    f'layer vs unfold at {case.batch}x{case.channels}x'
                    f'{case.height}x{case.width}: >= {TARGET_LAYER}x faster '
                    f'({speed:.1f}x) and >= {TARGET_LAYER}x leaner '
                    f'({lean:.1f}x): '
                    f'{_verdict(min(speed, lean) >= TARGET_LAYER)}')
    if args.network:
        targets += run_network(args, device)
    if targets:
        print('\nTargets:')
        for line in targets:
            print(f'- {line}')


if __name__ == '__main__':
    main()
