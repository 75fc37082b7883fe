#!/usr/bin/env python
"""Inference speed (images per second) of a detector or segmentor.

``python tools/analysis/benchmark.py CONFIG [CHECKPOINT]`` runs the model of
an mmdet or mmseg config in test mode, one image per batch like mmdet's and
mmseg's own benchmarks, and prints the throughput after some warm-up
images. By default the images come through the config's test dataloader
(real data and test pipeline, so resizing is included in what the model
sees, but data loading is not timed); ``--shape H W`` feeds random images of
that size instead and needs no dataset. Without a checkpoint the weights are
random, which does not change the speed.

Examples::

    python tools/analysis/benchmark.py CONFIG --shape 512 512
    python tools/analysis/benchmark.py CONFIG CKPT --num-images 200
"""
import argparse
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import tools.cli  # noqa: E402,F401  (quiet start: no third-party warnings)


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Measure inference images/s of an mmdet/mmseg config.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint (random weights when left out)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='random H x W images instead of the test set')
    parser.add_argument('--num-images', type=int, default=50,
                        help='images to time, after the warm-up')
    parser.add_argument('--warmup', type=int, default=5,
                        help='images run before timing starts')
    parser.add_argument('--log-interval', type=int, default=10,
                        help='print the running speed every N images')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys')
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.warmup < 0:
        parser.error('--num-images must be >= 1 and --warmup >= 0')
    return args


def build_model(cfg, checkpoint, device):
    """The config's model in eval mode, SyncBN reverted, on ``device``."""
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    from mmtwins.utils.checkpoint_fit import read_checkpoint

    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model = revert_sync_batchnorm(model)
    if checkpoint:
        # the safe loader's one-line refusal of a file it will not unpickle
        read_checkpoint(checkpoint)
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def synthetic_batches(task: str, shape, count: int):
    """Batches of one random uint8 image with the metadata the models read.
    """
    import torch
    if task == 'detection':
        from mmdet.structures import DetDataSample as Sample
    else:
        from mmseg.structures import SegDataSample as Sample
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                scale_factor=(1., 1.), img_path='', img_id=0)
    for _ in range(count):
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        yield dict(inputs=[img], data_samples=[Sample(metainfo=meta)])


def dataset_batches(cfg, count: int):
    """Batches of one image from the test dataloader, cycling if needed."""
    from mmengine.runner import Runner
    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg)
    done = 0
    while done < count:
        for batch in loader:
            yield batch
            done += 1
            if done == count:
                return


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    import mmtwins  # noqa: F401  (registers modules, safe checkpoint load)
    from tools.cli.config_checks import (
        check_dataset_paths,
        check_file,
        load_config,
        task_of,
    )
    from tools.cli.errors import exit_on_user_error

    with exit_on_user_error():
        cfg = load_config(args.config, args.cfg_options)
        task = task_of(cfg)
        if args.checkpoint:
            check_file(args.checkpoint, 'checkpoint file')
        if not args.shape:
            check_dataset_paths(cfg, ['test_dataloader'])
        device = args.device or ('cuda' if torch.cuda.is_available() else
                                 'cpu')
        model = build_model(cfg, args.checkpoint, device)
        total = args.warmup + args.num_images
        batches = (synthetic_batches(task, args.shape, total) if args.shape
                   else dataset_batches(cfg, total))
        elapsed, timed = 0., 0
        for i, batch in enumerate(batches):
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.no_grad():
                model.test_step(batch)
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            if i < args.warmup:
                continue
            elapsed += time.perf_counter() - start
            timed += 1
            if timed % args.log_interval == 0 or timed == args.num_images:
                print(f'Done image [{timed:<3}/{args.num_images}], '
                      f'fps: {timed / elapsed:.2f} img / s', flush=True)
    source = (f'random {args.shape[0]}x{args.shape[1]} images'
              if args.shape else 'the test set')
    print(f'Overall fps: {timed / elapsed:.2f} img / s on {device} '
          f'({source}, {timed} images after {args.warmup} warm-up, '
          f'{torch.get_num_threads()} threads)')


if __name__ == '__main__':
    main()
