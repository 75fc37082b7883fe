"""Convert Twins checkpoints (mmseg 1.x, mmpretrain 1.x, official) to mmtwins.

Usage:
    python tools/model_converters/twins2mmtwins.py SRC DST [--src-format F]

SRC may be a raw state dict or a ``{'state_dict': ...}`` / ``{'model': ...}``
file, a backbone-only checkpoint or a full detector/segmentor checkpoint
(``backbone.`` prefix; its neck/head keys are kept). The conversion is
lossless; unknown keys are refused with their names. The output is saved as
``{'state_dict': ..., 'meta': {...}}`` (written to a temporary file and
renamed, so DST is never half-written). A missing, unreadable or foreign
SRC, or a DST folder that does not exist, ends in one ``error:`` line and
exit status 2 (``--debug``: traceback).
"""
import argparse
import io
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmtwins.engine.atomic_files import atomic_write  # noqa: E402
from mmtwins.utils.checkpoint_fit import read_checkpoint  # noqa: E402
from mmtwins.utils.ckpt_convert import (  # noqa: E402
    FORMATS,
    CheckpointFormatError,
    convert_checkpoint,
)
from tools.cli.errors import (  # noqa: E402
    ToolError,
    add_debug_flag,
    exit_on_user_error,
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
    add_debug_flag(parser)
    return parser.parse_args(argv)


def convert(src: str, dst: str, src_format: str = 'auto') -> str:
    """Convert ``src`` into ``dst``; returns the summary line."""
    folder = osp.dirname(osp.abspath(dst))
    if not osp.isdir(folder):
        raise ToolError(f'output folder does not exist: {folder} (for '
                        f'{dst}); create it first')
    checkpoint = read_checkpoint(src)
    try:
        state, report = convert_checkpoint(checkpoint, src_format)
    except CheckpointFormatError as err:
        raise ToolError(f'{src}: {err}') from err
    meta = dict(converted_from=osp.basename(src), **report)
    buffer = io.BytesIO()
    torch.save(dict(state_dict=state, meta=meta), buffer)
    atomic_write(dst, buffer.getvalue())
    return (f'converted {report["num_backbone_keys"]} backbone tensors from '
            f'{report["format"]} layout; dropped {len(report["dropped"])} '
            f'classifier keys {report["dropped"]}; wrote {dst}')


def main(argv=None) -> int:
    args = parse_args(argv)
    with exit_on_user_error(args.debug):
        print(convert(args.src, args.dst, args.src_format))
    return 0


if __name__ == '__main__':
    sys.exit(main())
