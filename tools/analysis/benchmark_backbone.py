"""Benchmark mmtwins' Twins backbones against MMSegmentation's PCPVT/SVT.

Both implementations are built with the same architecture and the same
weights (mmseg's random init, converted), in one process, and run in the
same modes: fp32 eager, bf16 autocast (``torch.autocast``) and, with
``--compile``, fp32 under ``torch.compile`` (inductor, static shapes; the
first call's extra time is reported as the compile time). Every repeat runs
each (implementation, mode) once, back to back, so that machine noise hits
all alike; a speed-up is the median of the per-repeat ratios, which a
machine whose load drifts disturbs less than a ratio of medians.

Two tables:

* forward latency (eval mode, no grad) at ``--sizes``, batch ``--batch``;
* training step (train mode, forward + backward of a sum of the output
  means) at ``--train-sizes``, batch ``--train-batch``: time, and the
  allocation high-water mark on top of parameters and input (see
  ``bench_utils.peak_memory``), also for mmtwins with ``with_cp=True``
  (activation checkpointing per block) and ``with_cp='selective'``
  (matrix-product, attention and conv outputs kept, element-wise results
  recomputed), and with ``--compile`` for mmtwins compiled under the
  compiler's activation memory budget ``--memory-budget``
  (:func:`mmtwins.utils.activation_memory_budget`, as ``tools/train.py
  --compile --memory-budget``: the partitioner recomputes cheap activations
  inside the compiled backward). ``--train-amp`` adds a table of training
  steps under bf16 autocast (mixed precision, how GPU runs train), mmtwins
  against mmseg; it is not one of the targets.

The training targets (speed and peak memory) are checked for one mode:
mmtwins compiled with the memory budget (``--compile``), otherwise
``with_cp='selective'``; a PASS/FAIL line says whether that mode meets both.

CPU memory (``--malloc``): by default the benchmark first makes glibc keep
freed memory for reuse (``reuse_freed_cpu_memory`` of
:mod:`mmtwins.utils.cpu_memory`, as ``tools/train.py`` does on the CPU).
Under glibc's default policy every large tensor of a step is fresh ``mmap``
memory, and how much of a step page-faults depends on what the *other*
models interleaved in the same process allocated before, which moves the
training speed-up by up to 0.15x between runs. ``--malloc default`` keeps
glibc's policy to see it. The training table reports the page faults per
step either way.

mmtwins runs in mmseg-compatible mode (LayerNorm eps 1e-5,
``patch_rounding='ceil'``, ``lsa_pad='mmseg'``) so both compute the same
function. The targets are printed under the tables. Runs unchanged
on CUDA (``--device cuda``; bf16 autocast there too).

Example::

    python tools/analysis/benchmark_backbone.py --repeats 5 --compile
"""
import argparse
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from bench_utils import (  # noqa: E402
    add_malloc_argument,
    machine,
    median,
    peak_memory,
    pick_device,
    time_once,
)

from mmtwins.models import TwinsPCPVT, TwinsSVT  # noqa: E402
from mmtwins.utils import activation_memory_budget  # noqa: E402
from mmtwins.utils.ckpt_convert import mmseg_to_official  # noqa: E402
from mmtwins.utils.cpu_memory import (  # noqa: E402
    minor_page_faults,
    set_malloc_policy,
)

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
IMPLS = ('mmseg', 'mmtwins')
# mmtwins compiled under the activation memory budget (--compile): the mode
# that the training targets are checked for; without --compile,
# with_cp='selective'.
BUDGET = 'mmtwins compiled budget'
# Targets (CPU fp32): forward speed-up of mmtwins' best mode
# over mmseg eager and over mmseg compiled, training-step speed-up over
# mmseg eager, training peak memory over mmseg's.
TARGET_FWD_EAGER = 1.3
TARGET_FWD_COMPILED = 1.0
TARGET_TRAIN = 1.3
TARGET_MEMORY = 0.6

Runner = Callable[[], object]


def build_pair(arch: str, device: torch.device, **kwargs):
    """(mmtwins, mmseg) backbones of ``arch`` with the same weights;
    ``kwargs`` (e.g. ``with_cp``) go to mmtwins."""
    from mmseg.models.backbones import PCPVT, SVT
    torch.manual_seed(0)
    if arch == 'pcpvt_s':
        theirs = PCPVT(**MMSEG_ARCHS[arch])
        ours = TwinsPCPVT('small', norm_eps=1e-5, patch_rounding='ceil',
                          **kwargs)
    else:
        theirs = SVT(**MMSEG_ARCHS[arch])
        ours = TwinsSVT('small', norm_eps=1e-5, patch_rounding='ceil',
                        lsa_pad='mmseg', **kwargs)
    theirs.init_weights()
    ours.load_state_dict(mmseg_to_official(theirs.state_dict()))
    return ours.to(device), theirs.to(device)


def forward_fn(model, x, bf16: bool = False) -> Runner:
    def run():
        with torch.no_grad(), torch.autocast(
                x.device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)
    return run


def train_step_fn(model, x) -> Runner:
    def run():
        outs = model(x)
        sum(o.float().mean() for o in outs).backward()
    return run


def amp_train_step_fn(model, x) -> Runner:
    """Training step with the forward under bf16 ``torch.autocast`` (how
    mixed-precision training runs; the backward follows the forward's
    dtypes)."""
    def run():
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            outs = model(x)
        sum(o.float().mean() for o in outs).backward()
    return run


def budget_train_step_fn(model, x, budget: float) -> Runner:
    """Training step of ``model`` compiled under the activation memory
    ``budget``. The budget is no dynamo guard, so the model is compiled
    through a function of its own: dynamo keeps that graph apart from the
    plain compiled model's instead of reusing it."""
    def budget_forward(inputs):
        return model(inputs)

    step = train_step_fn(torch.compile(budget_forward, dynamic=False), x)

    def run():
        with activation_memory_budget(budget):
            step()
    return run


def compile_model(model):
    """``torch.compile`` with static shapes (one graph per input size)."""
    return torch.compile(model, dynamic=False)


def interleaved(runners: Dict[str, Runner], repeats: int,
                device: torch.device,
                faults: Optional[Dict[str, List[int]]] = None
                ) -> Dict[str, List[float]]:
    """Seconds per call of every runner, one call each per repeat; with
    ``faults``, also each call's minor page faults, appended there."""
    times: Dict[str, List[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            before = minor_page_faults()
            times[name].append(time_once(run, device))
            if faults is not None:
                faults.setdefault(name, []).append(minor_page_faults() -
                                                   before)
    return times


def paired_ratio(times: Dict[str, List[float]], slow: str,
                 fast: str) -> float:
    """Median over repeats of ``slow / fast`` (the speed-up of ``fast``)."""
    return median([s / f for s, f in zip(times[slow], times[fast])])


def warm(runners: Dict[str, Runner], warmup: int,
         device: torch.device) -> Dict[str, float]:
    """Run each runner ``warmup`` times (at least once); return the first
    call's seconds (the compile time, for compiled runners)."""
    first = {}
    for name, run in runners.items():
        first[name] = time_once(run, device)
        for _ in range(warmup - 1):
            run()
    return first


def bench_forward(arch: str, size: Tuple[int, int], args,
                  device: torch.device) -> dict:
    ours, theirs = build_pair(arch, device)
    models = {'mmtwins': ours.eval(), 'mmseg': theirs.eval()}
    x = torch.randn(args.batch, 3, *size, device=device)
    runners: Dict[str, Runner] = {}
    for impl in IMPLS:
        runners[f'{impl} eager'] = forward_fn(models[impl], x)
        runners[f'{impl} bf16'] = forward_fn(models[impl], x, bf16=True)
        if args.compile:
            runners[f'{impl} compiled'] = forward_fn(
                compile_model(models[impl]), x)
    first = warm(runners, args.warmup, device)
    times = interleaved(runners, args.repeats, device)
    return dict(times=times, first=first)


def bench_train(arch: str, size: Tuple[int, int], args,
                device: torch.device) -> dict:
    ours, theirs = build_pair(arch, device)
    ours_cp, _ = build_pair(arch, device, with_cp=True)
    ours_sel, _ = build_pair(arch, device, with_cp='selective')
    models = {'mmtwins': ours.train(), 'mmseg': theirs.train(),
              'mmtwins with_cp': ours_cp.train(),
              'mmtwins selective': ours_sel.train()}
    if args.compile:
        models[BUDGET] = build_pair(arch, device)[0].train()
    x = torch.randn(args.train_batch, 3, *size, device=device)
    runners: Dict[str, Runner] = {
        'mmseg eager': train_step_fn(models['mmseg'], x),
        'mmtwins eager': train_step_fn(models['mmtwins'], x),
        'mmtwins with_cp': train_step_fn(models['mmtwins with_cp'], x),
        'mmtwins selective': train_step_fn(models['mmtwins selective'], x),
    }
    if args.train_amp:
        for impl in IMPLS:
            runners[f'{impl} bf16'] = amp_train_step_fn(models[impl], x)
    if args.compile:
        for impl in IMPLS:
            runners[f'{impl} compiled'] = train_step_fn(
                compile_model(models[impl]), x)
        runners[BUDGET] = budget_train_step_fn(models[BUDGET], x,
                                               args.memory_budget)
    first = warm(runners, args.warmup, device)  # also allocates .grad
    faults: Dict[str, List[int]] = {}
    times = interleaved(runners, args.train_repeats, device, faults)
    peaks = {name: peak_memory(run, device) / 2**20
             for name, run in runners.items()}
    for model in models.values():
        model.zero_grad(set_to_none=True)
    return dict(times=times, first=first, peaks=peaks, faults=faults)


def parse_size(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'size must look like 512x512, got {text!r}') from None
    return h, w


def _ms(times: Dict[str, List[float]], key: str) -> str:
    return f'{median(times[key]) * 1e3:.1f}' if key in times else '-'


def _amp_row(arch: str, size: Tuple[int, int], r: dict) -> str:
    """One row of the bf16-autocast training table."""
    t, p = r['times'], r['peaks']
    ours, theirs = p['mmtwins bf16'], p['mmseg bf16']
    return (f'| {arch} | {size[0]}x{size[1]} | {_ms(t, "mmseg bf16")} | '
            f'{_ms(t, "mmtwins bf16")} | '
            f'{paired_ratio(t, "mmseg bf16", "mmtwins bf16"):.2f}x | '
            f'{theirs:.0f} | {ours:.0f} | {ours / theirs:.2f}x |')


def _faults(faults: Dict[str, List[int]]) -> str:
    """Median page faults per step, in thousands, of the main modes."""
    return ' / '.join(f'{median(faults[k]) / 1000:.0f}' if k in faults
                      else '-' for k in ('mmseg eager', 'mmtwins eager',
                                         BUDGET))


def _check(value: Optional[float], target: float, higher: bool) -> str:
    if value is None:
        return 'not measured (run with --compile)'
    met = value >= target if higher else value <= target
    return f'{value:.2f}x ({"met" if met else "NOT met"})'


def forward_table(args, device: torch.device, checks: List[str]) -> None:
    """Print the forward table; append its target lines to ``checks``."""
    print(f'\n## Forward (eval, no grad), batch {args.batch}, median of '
          f'{args.repeats} interleaved repeats (ms); speed-ups are medians '
          'of paired ratios against mmseg')
    print('| backbone | input | mmseg fp32 | mmseg compiled | mmseg bf16 | '
          'mmtwins fp32 | mmtwins compiled | mmtwins bf16 | '
          'best mmtwins fp32 vs mmseg fp32 | vs mmseg compiled | '
          'bf16 vs mmseg bf16 | compile s (mmseg / mmtwins) |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for arch in args.archs:
        for size in args.sizes:
            r = bench_forward(arch, size, args, device)
            t = r['times']
            best = 'mmtwins eager'
            if args.compile and median(t['mmtwins compiled']) < median(
                    t['mmtwins eager']):
                best = 'mmtwins compiled'
            vs_eager = paired_ratio(t, 'mmseg eager', best)
            vs_compiled = (paired_ratio(t, 'mmseg compiled', best)
                           if args.compile else None)
            bf16 = paired_ratio(t, 'mmseg bf16', 'mmtwins bf16')
            compile_s = '-'
            if args.compile:
                compile_s = ' / '.join(
                    f'{r["first"][f"{i} compiled"]:.0f}' for i in IMPLS)
            label = best.split()[1]
            print(f'| {arch} | {size[0]}x{size[1]} | '
                  f'{_ms(t, "mmseg eager")} | {_ms(t, "mmseg compiled")} | '
                  f'{_ms(t, "mmseg bf16")} | {_ms(t, "mmtwins eager")} | '
                  f'{_ms(t, "mmtwins compiled")} | {_ms(t, "mmtwins bf16")} '
                  f'| {vs_eager:.2f}x ({label}) | '
                  + (f'{vs_compiled:.2f}x' if vs_compiled else '-') +
                  f' | {bf16:.2f}x | {compile_s} |', flush=True)
            case = f'{arch} {size[0]}x{size[1]} forward'
            checks.append(f'{case}: >= {TARGET_FWD_EAGER}x mmseg eager: '
                          f'{_check(vs_eager, TARGET_FWD_EAGER, True)}')
            checks.append(f'{case}: >= {TARGET_FWD_COMPILED}x mmseg '
                          f'compiled: '
                          f'{_check(vs_compiled, TARGET_FWD_COMPILED, True)}')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--archs', nargs='+', default=list(MMSEG_ARCHS),
                        choices=list(MMSEG_ARCHS))
    parser.add_argument('--sizes', nargs='*', type=parse_size,
                        default=[(512, 512), (800, 1344)],
                        help='forward sizes (none: skip the forward table)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--train-sizes', nargs='*', type=parse_size,
                        default=[(512, 512)],
                        help='training-step sizes (none: skip training)')
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--train-repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--train-amp', action='store_true',
        help='add a table of training steps under bf16 autocast (mixed '
        'precision), mmtwins against mmseg; not one of the targets')
    parser.add_argument('--compile', action='store_true',
                        help='add torch.compile columns (compiling takes '
                        'about a minute per model and size on a CPU)')
    parser.add_argument(
        '--memory-budget', type=float, default=0.7,
        help='activation memory budget of the compiled training mode that '
        'the training targets are checked for (with --compile)')
    parser.add_argument('--device', default='auto',
                        help='auto, cpu or cuda[:N]')
    add_malloc_argument(parser)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    malloc = set_malloc_policy(args.malloc)
    print(f'# Twins backbone benchmark: mmtwins vs mmseg 1.x on '
          f'{machine(device)}, torch {torch.__version__}, '
          f'{time.strftime("%Y-%m-%d")}\n# {malloc}')
    checks: List[str] = []

    if args.sizes:
        forward_table(args, device, checks)

    if args.train_sizes:
        budget = f'budget {args.memory_budget:g}'
        print(f'\n## Training step (forward + backward), batch '
              f'{args.train_batch}, median of {args.train_repeats} '
              f'interleaved repeats (ms); peak = allocation high-water mark '
              f'(MiB); "compiled {budget}" = mmtwins compiled under the '
              f'activation memory budget {args.memory_budget:g}')
        print(f'| backbone | input | mmseg eager | mmseg compiled | '
              f'mmtwins eager | mmtwins compiled | mmtwins with_cp | '
              f'mmtwins selective | mmtwins compiled {budget} | '
              f'speed-up eager | speed-up selective | speed-up compiled '
              f'{budget} | speed-up best | peak mmseg | peak mmtwins eager '
              f'/ compiled / with_cp / selective / compiled {budget} | '
              f'memory ratio eager / compiled / with_cp / selective / '
              f'compiled {budget} | compile s (mmseg / mmtwins / mmtwins '
              f'{budget}) | page faults per step, thousands (mmseg eager / '
              f'mmtwins eager / mmtwins compiled {budget}) |')
        print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
              '---|---|---|')
        amp_rows: List[str] = []
        for arch in args.archs:
            for size in args.train_sizes:
                r = bench_train(arch, size, args, device)
                if args.train_amp:
                    amp_rows.append(_amp_row(arch, size, r))
                t, p = r['times'], r['peaks']
                speedups = {v: paired_ratio(t, 'mmseg eager', v)
                            for v in ('mmtwins eager', 'mmtwins compiled',
                                      'mmtwins with_cp', 'mmtwins selective',
                                      BUDGET) if v in t}
                best = max(speedups.values())
                variants = ['mmtwins eager', 'mmtwins compiled',
                            'mmtwins with_cp', 'mmtwins selective', BUDGET]
                peaks = ' / '.join(f'{p[v]:.0f}' if v in p else '-'
                                   for v in variants)
                ratios = ' / '.join(
                    f'{p[v] / p["mmseg eager"]:.2f}x' if v in p else '-'
                    for v in variants)
                budget_speed = (f'{speedups[BUDGET]:.2f}x'
                                if BUDGET in speedups else '-')
                compile_s = '-'
                if args.compile:
                    compile_s = ' / '.join(
                        f'{r["first"][k]:.0f}' for k in (
                            'mmseg compiled', 'mmtwins compiled', BUDGET))
                print(f'| {arch} | {size[0]}x{size[1]} | '
                      f'{_ms(t, "mmseg eager")} | '
                      f'{_ms(t, "mmseg compiled")} | '
                      f'{_ms(t, "mmtwins eager")} | '
                      f'{_ms(t, "mmtwins compiled")} | '
                      f'{_ms(t, "mmtwins with_cp")} | '
                      f'{_ms(t, "mmtwins selective")} | {_ms(t, BUDGET)} | '
                      f'{speedups["mmtwins eager"]:.2f}x | '
                      f'{speedups["mmtwins selective"]:.2f}x | '
                      f'{budget_speed} | {best:.2f}x | '
                      f'{p["mmseg eager"]:.0f} | {peaks} | {ratios} | '
                      f'{compile_s} | {_faults(r["faults"])} |', flush=True)
                # Both training targets for one and the same mode.
                mode = BUDGET if args.compile else 'mmtwins selective'
                label = (f'mmtwins compiled, activation memory budget '
                         f'{args.memory_budget:g}' if args.compile else
                         "mmtwins with_cp='selective' (eager; run with "
                         "--compile for the compiled mode)")
                speed = speedups[mode]
                memory = p[mode] / p['mmseg eager']
                case = f'{arch} {size[0]}x{size[1]} train [{label}]'
                checks.append(f'{case}: >= {TARGET_TRAIN}x mmseg eager: '
                              f'{_check(speed, TARGET_TRAIN, True)}')
                checks.append(f'{case}: peak memory <= {TARGET_MEMORY}x '
                              f'mmseg eager: '
                              f'{_check(memory, TARGET_MEMORY, False)}')
                both = speed >= TARGET_TRAIN and memory <= TARGET_MEMORY
                checks.append(f'{case}: both training targets in this one '
                              f'mode: {"PASS" if both else "FAIL"}')

    if args.train_sizes and args.train_amp:
        print(f'\n## Training step under bf16 autocast, batch '
              f'{args.train_batch}, median of {args.train_repeats} '
              f'interleaved repeats (ms); peak = allocation high-water mark '
              f'(MiB); not a target')
        print('| backbone | input | mmseg bf16 | mmtwins bf16 | speed-up | '
              'peak mmseg bf16 | peak mmtwins bf16 | memory ratio |')
        print('|---|---|---|---|---|---|---|---|')
        for row in amp_rows:
            print(row)

    print('\n## Targets')
    for line in checks:
        print(f'- {line}')


if __name__ == '__main__':
    main()
