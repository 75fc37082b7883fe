"""mmengine checkpoints load and resume under torch's safe ``torch.load``,
while anything else outside the allowlist is still rejected."""
import os
import os.path as osp
import pickle
import pickletools
import zipfile

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from toy_runner import ToyData, ToyModel

import mmtwins  # noqa: F401  (applies the allowlist)
from mmtwins.utils.safe_load import history_buffer_getattr


class ToyMetric(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results += [float((s['pred'] - s['target'])**2)
                         for s in data_samples]

    def compute_metrics(self, results):
        return dict(mse=np.float64(np.mean(results)))  # a numpy scalar


def _runner(work_dir, max_iters, resume=False):
    loader = dict(dataset=ToyData(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True))
    return Runner(
        model=ToyModel(), work_dir=work_dir, experiment_name=f'{max_iters}'
        f'{resume}{work_dir}', train_dataloader=loader,
        val_dataloader=loader, val_evaluator=[ToyMetric()],
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=2),
        val_cfg=dict(),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1,
                              by_epoch=False, begin=0, end=3)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=2, by_epoch=False)),
        randomness=dict(seed=0), resume=resume)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('toy'))
    _runner(work_dir, max_iters=4).train()
    return work_dir


def _pickled_globals(path):
    """Every ``module.name`` a torch zip checkpoint's pickle refers to."""
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith('/data.pkl'))
        data = zf.read(name)
    found = set()
    for op, arg, _ in pickletools.genops(data):
        if op.name == 'GLOBAL':
            module, attr = arg.split(' ')
            found.add(f'{module}.{attr}'.replace('__builtin__.', 'builtins.'))
    return found


def test_checkpoint_holds_the_allowlisted_globals(trained):
    found = _pickled_globals(osp.join(trained, 'iter_4.pth'))
    # torch's own rebuild functions and containers are allowed by default.
    found = {g for g in found if not g.startswith(('torch.', 'collections.',
                                                   '_codecs.'))}
    # Measured content of an mmengine 0.10.7 checkpoint (numpy 2 names).
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in found
    assert 'builtins.getattr' in found
    assert found <= {
        'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr',
        'numpy.ndarray', 'numpy.dtype', 'numpy._core.multiarray._reconstruct',
        'numpy._core.multiarray.scalar', 'numpy.core.multiarray._reconstruct',
        'numpy.core.multiarray.scalar'
    }


def test_safe_load_reads_an_mmengine_checkpoint(trained):
    ckpt = torch.load(osp.join(trained, 'iter_4.pth'), weights_only=True)
    assert ckpt['meta']['iter'] == 4
    hub = ckpt['message_hub']
    loss = hub['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 4
    assert loss.mean() == pytest.approx(float(np.mean(loss.data[0])))
    assert isinstance(hub['runtime_info']['eta'], np.floating)


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    work_dir = str(tmp_path)
    for name in ('iter_2.pth', 'last_checkpoint'):
        with open(osp.join(trained, name), 'rb') as f:
            data = f.read()
        if name == 'last_checkpoint':
            data = osp.join(work_dir, 'iter_2.pth').encode()
        with open(osp.join(work_dir, name), 'wb') as f:
            f.write(data)
    runner = _runner(work_dir, max_iters=4, resume=True)
    runner.train()
    assert runner.iter == 4
    # History survived the resume: 2 logged losses before, 2 after.
    hist = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(hist) == 4
    final = torch.load(osp.join(trained, 'iter_4.pth'))['state_dict']
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(value, final[key])


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned',))


class _SneakyGetattr:
    """Asks the restricted getattr for something that is not a statistic."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize('payload', [_Evil(), _SneakyGetattr(),
                                     {'obj': ToyMetric}])
def test_other_objects_are_still_rejected(tmp_path, payload):
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'x': payload}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_restricted_getattr():
    assert history_buffer_getattr(HistoryBuffer, 'mean') is \
        HistoryBuffer.mean
    for obj, name in ((HistoryBuffer, 'update'), (os, 'system'),
                      (HistoryBuffer, '__class__')):
        with pytest.raises(pickle.UnpicklingError):
            history_buffer_getattr(obj, name)
