"""``tools/test.py CONFIG MODEL.onnx``: the config's model replaced by the
end-to-end ONNX file run with onnxruntime
(:class:`mmtwins.deploy.ONNXRuntimeModel`); the runner, metrics, report,
``--out`` and ``--show-dir`` stay those of a checkpoint test."""
from __future__ import annotations

from tools.cli.errors import ToolError


def is_onnx(path: str) -> bool:
    """Whether a tool's model argument names an ONNX file."""
    return str(path).lower().endswith('.onnx')


def use_onnx_model(cfg, args) -> None:
    """Point ``cfg.model`` at ``args.checkpoint`` (an ONNX file exported
    from ``args.config``) and load no weights."""
    import mmtwins.deploy  # noqa: F401  (registers ONNXRuntimeModel)
    from mmtwins.deploy import onnx_model_cfg
    for flag in ('tta', 'compile', 'allow_partial_load'):
        if getattr(args, flag, False):
            raise ToolError(f'--{flag.replace("_", "-")} applies to '
                            f'checkpoints; {args.checkpoint} runs as '
                            'exported (drop the flag)')
    cfg.model = onnx_model_cfg(args.checkpoint, cfg, args.config)
    cfg.load_from = None
    if 'model_wrapper_cfg' in cfg:
        cfg.pop('model_wrapper_cfg')
