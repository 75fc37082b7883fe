"""Benchmark mmtwins' Twins backbones against MMSegmentation's PCPVT/SVT.

Both implementations are built with the same architecture and the same
weights (mmseg's random init, converted), in one process; each measurement
alternates between the two so that machine noise hits both alike. Reported:

* forward latency (eval mode, no grad): median over ``--repeats`` runs;
  the speed-up is the median of the per-repeat ratios (each pair runs back
  to back), which a machine whose load drifts disturbs less than a ratio of
  medians;
* training-step peak memory: the allocation high-water mark of one
  forward + backward in train mode on top of parameters and input (see
  ``bench_utils.peak_memory``).

Ratios: ``speed-up = mmseg time / mmtwins time`` (paired, see above) and
``memory = mmtwins peak / mmseg peak``. mmtwins runs in mmseg-compatible
mode (LayerNorm eps 1e-5, ``patch_rounding='ceil'``, ``lsa_pad='mmseg'``) so
both compute the same function. Runs unchanged on CUDA.

Example::

    python tools/analysis/benchmark_backbone.py --repeats 5
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from bench_utils import median, peak_memory, pick_device, time_once  # noqa: E402

from mmtwins.models import TwinsPCPVT, TwinsSVT  # noqa: E402
from mmtwins.utils.ckpt_convert import mmseg_to_official  # noqa: E402

MMSEG_ARCHS = {
    'pcpvt_s': dict(
        embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8],
        mlp_ratios=[8, 8, 4, 4], depths=[3, 4, 6, 3],
        sr_ratios=[8, 4, 2, 1], qkv_bias=True, norm_after_stage=False),
    'svt_s': dict(
        embed_dims=[64, 128, 256, 512], num_heads=[2, 4, 8, 16],
        mlp_ratios=[4, 4, 4, 4], depths=[2, 2, 10, 4],
        sr_ratios=[8, 4, 2, 1], windiow_sizes=[7, 7, 7, 7], qkv_bias=True,
        norm_after_stage=True),
}


def build_pair(arch: str, device: torch.device):
    from mmseg.models.backbones import PCPVT, SVT
    torch.manual_seed(0)
    if arch == 'pcpvt_s':
        theirs = PCPVT(**MMSEG_ARCHS[arch])
        ours = TwinsPCPVT('small', norm_eps=1e-5, patch_rounding='ceil')
    else:
        theirs = SVT(**MMSEG_ARCHS[arch])
        ours = TwinsSVT('small', norm_eps=1e-5, patch_rounding='ceil',
                        lsa_pad='mmseg')
    theirs.init_weights()
    ours.load_state_dict(mmseg_to_official(theirs.state_dict()))
    return ours.to(device), theirs.to(device)


def forward_fn(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def train_step_fn(model, x):
    def run():
        outs = model(x)
        sum(o.float().mean() for o in outs).backward()
    return run


def bench(arch: str, size: Tuple[int, int], args,
          device: torch.device) -> Dict[str, float]:
    ours, theirs = build_pair(arch, device)
    x = torch.randn(args.batch, 3, *size, device=device)
    models = {'mmtwins': ours, 'mmseg': theirs}
    times: Dict[str, List[float]] = {k: [] for k in models}
    for model in models.values():
        model.eval()
        for _ in range(args.warmup):
            forward_fn(model, x)()
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(time_once(forward_fn(model, x), device))
    peaks: Dict[str, int] = {}
    for name, model in models.items():
        model.train()
        train_step_fn(model, x)()  # warm-up; allocates .grad buffers
        peaks[name] = peak_memory(train_step_fn(model, x), device)
        model.zero_grad(set_to_none=True)
    return dict(
        speedup=median([t / o for o, t in zip(times['mmtwins'],
                                              times['mmseg'])]),
        ours_ms=median(times['mmtwins']) * 1e3,
        theirs_ms=median(times['mmseg']) * 1e3,
        ours_mb=peaks['mmtwins'] / 2**20,
        theirs_mb=peaks['mmseg'] / 2**20)


def parse_size(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'size must look like 512x512, got {text!r}') from None
    return h, w


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--archs', nargs='+', default=list(MMSEG_ARCHS),
                        choices=list(MMSEG_ARCHS))
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[(512, 512), (800, 1344)])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='auto',
                        help='auto, cpu or cuda[:N]')
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == 'cuda'
            else f'CPU, {torch.get_num_threads()} threads')
    print(f'# Twins backbone benchmark: mmtwins vs mmseg 1.x, fp32, batch '
          f'{args.batch}, {name}, torch {torch.__version__}, median of '
          f'{args.repeats}')
    print('| backbone | input | fwd mmtwins (ms) | fwd mmseg (ms) | '
          'speed-up | train peak mmtwins (MiB) | train peak mmseg (MiB) | '
          'memory ratio |')
    print('|---|---|---|---|---|---|---|---|')
    for arch in args.archs:
        for size in args.sizes:
            r = bench(arch, size, args, device)
            print(f'| {arch} | {size[0]}x{size[1]} | {r["ours_ms"]:.1f} | '
                  f'{r["theirs_ms"]:.1f} | '
                  f'{r["speedup"]:.2f}x | '
                  f'{r["ours_mb"]:.0f} | {r["theirs_mb"]:.0f} | '
                  f'{r["ours_mb"] / r["theirs_mb"]:.2f}x |', flush=True)


if __name__ == '__main__':
    main()
