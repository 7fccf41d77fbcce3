"""A callback for the safety tests: the process sends itself a signal at a given point of
training (the start of an epoch, or of one of its batches). It fires in a fresh fit only, so
the resumed run is given the same command line (``--resume`` refuses any other)."""

import os
import signal

import lightning as L


class KillAt(L.Callback):
    def __init__(self, epoch: int, sig: str = "SIGKILL", batch: int | None = None):
        self.epoch, self.sig, self.batch = epoch, getattr(signal, sig), batch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch and self.batch is None:
            os.kill(os.getpid(), self.sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch:
            if batch_idx == self.batch:
                os.kill(os.getpid(), self.sig)
