"""A two-weight regression model and its eight-sample dataset, for tests
that run mmengine's real Runner (checkpoints, resume, safe loading) in a
second or two."""
import torch
import torch.nn as nn
from mmengine.model import BaseModel


class ToyModel(BaseModel):
    """``y = w . x + b``; the loss is the mean squared error."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.linear(torch.stack(inputs)).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - torch.stack(targets))**2).mean())
        return [dict(pred=p, target=t) for p, t in zip(out, targets)]


class ToyData(torch.utils.data.Dataset):
    """Eight samples of ``y = 2 x``; ``metainfo`` as mmengine saves it."""

    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)])

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([i, 1.]), targets=torch.tensor(2. * i))
