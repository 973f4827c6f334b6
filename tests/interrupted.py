"""A training interrupted in this process at the start of an epoch (as Ctrl-C would), leaving the
epoch checkpoints of those before it: for tests of what a resumed phase reads back."""

from __future__ import annotations

import pytest

from mexlib.batches import BatchLoader
from mexlib.train import train_regime


def train_until(epoch: int, config, data, device, workdir, monkeypatch) -> None:
    """Train ``config``'s regime into ``workdir`` and stop it as epoch ``epoch`` begins."""
    original = BatchLoader.set_epoch

    def interrupt(self, e):
        if e == epoch:
            raise KeyboardInterrupt
        original(self, e)

    with monkeypatch.context() as patch:
        patch.setattr(BatchLoader, "set_epoch", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_regime(config, data, device, workdir=workdir, progress=False)
