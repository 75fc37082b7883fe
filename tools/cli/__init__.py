"""Helpers shared by the command-line tools (not part of the library):

* :mod:`.errors`: one-line errors, exit status 2, ``--debug``;
* :mod:`.config_checks`: config loading and dataset/work-dir checks;
* :mod:`.data_checks`: diagnoses of dataset errors raised deep inside;
* :mod:`.checkpoint_checks`: strict checkpoint checks for test and resume;
* :mod:`.dist_env`: distributed set-up on machines without CUDA;
* :mod:`.eval_report`, :mod:`.paper_results`: evaluation reports;
* :mod:`.resume_checks`, :mod:`.train_hooks`, :mod:`.interrupts`,
  :mod:`.torchrun`: what ``tools/train.py`` checks and adds to survive
  faults (docs/en/user_guides/resume_and_crash_safety.md).

Importing this package silences the third-party warnings that every tool
would otherwise print on start-up and that say nothing about the user's
config: setuptools' deprecation of ``pkg_resources`` (which mmengine and
the OpenMMLab packages import) and mmseg's notes about its own internal
API (``build_loss``, ``avg_non_ignore``, ``reduce_zero_label``, a
visualization hook that does not draw during training); in distributed
runs, mmengine's notes on the start method and thread counts it sets in
every process, and torch's deprecation of the ``broadcast_buffers``
argument that mmengine's DDP wrapper passes (torch itself advises keeping
it where buffers must not be synced at start); and the ONNX exporter's
log lines about torchvision ops it skips because torchvision is not
installed (mmtwins exports its own NMS and RoIAlign ops). A tool imports
this package before mmengine.
"""
import logging
import warnings

_QUIET = (
    (UserWarning, 'pkg_resources is deprecated'),
    (DeprecationWarning, 'Deprecated call to `pkg_resources'),
    (UserWarning, '``build_loss`` would be deprecated'),
    (UserWarning, 'Default ``avg_non_ignore`` is False'),
    (UserWarning, '`reduce_zero_label` will be deprecated'),
    (UserWarning, 'The draw is False, it means that the hook for'),
    (UserWarning, 'Multi-processing start method'),
    (UserWarning, 'Setting MKL_NUM_THREADS environment variable'),
    (UserWarning, 'Setting OMP_NUM_THREADS environment variable'),
    (FutureWarning, '`broadcast_buffers` is deprecated'),
)
for _category, _message in _QUIET:
    warnings.filterwarnings('ignore', message=_message.replace(
        '`', '.').replace('(', '.'), category=_category)

logging.getLogger('torch.onnx._internal.exporter._registration').setLevel(
    logging.ERROR)
