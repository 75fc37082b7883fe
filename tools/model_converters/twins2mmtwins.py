"""Convert Twins checkpoints (mmseg 1.x, mmpretrain 1.x, official) to mmtwins.

Usage:
    python tools/model_converters/twins2mmtwins.py SRC DST [--src-format F]

SRC may be a raw state dict or a ``{'state_dict': ...}`` / ``{'model': ...}``
file, a backbone-only checkpoint or a full detector/segmentor checkpoint
(``backbone.`` prefix; its neck/head keys are kept). The conversion is
lossless; unknown keys are refused with their names. The output is saved as
``{'state_dict': ..., 'meta': {...}}``.
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmtwins.utils.ckpt_convert import (  # noqa: E402
    FORMATS,
    CheckpointFormatError,
    convert_checkpoint,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a Twins checkpoint to mmtwins key names.')
    parser.add_argument('src', help='source checkpoint file')
    parser.add_argument('dst', help='output checkpoint file')
    parser.add_argument(
        '--src-format',
        default='auto',
        choices=('auto', ) + FORMATS,
        help='key layout of SRC (default: detect it)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.src):
        print(f'error: checkpoint not found: {args.src}', file=sys.stderr)
        return 1
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    try:
        state, report = convert_checkpoint(checkpoint, args.src_format)
    except CheckpointFormatError as err:
        print(f'error: {args.src}: {err}', file=sys.stderr)
        return 1
    meta = dict(converted_from=osp.basename(args.src), **report)
    torch.save(dict(state_dict=state, meta=meta), args.dst)
    print(f'converted {report["num_backbone_keys"]} backbone tensors from '
          f'{report["format"]} layout; dropped {len(report["dropped"])} '
          f'classifier keys {report["dropped"]}; wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
