"""A callback for the DDP test: records what the first training step of each rank saw and did.

Rank ``r`` writes ``rank<r>.pt``: its first batch, the CPU RNG state just before the step (so
dropout can be replayed) and its thread count (float sums depend on it); rank 0 also writes the
weights before the step and the gradients the optimiser receives (after DDP's all-reduce, before
clipping).
"""

from pathlib import Path

import lightning as L
import torch


class FirstStepProbe(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.record: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0 and batch_idx == 0:
            self.record = {
                "batch": batch,
                "rng": torch.get_rng_state(),
                "threads": torch.get_num_threads(),  # Lightning sets it per rank
            }
            if trainer.global_rank == 0:
                state = pl_module.state_dict()
                self.record["state"] = {k: v.detach().clone() for k, v in state.items()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step != 0:
            return
        if trainer.global_rank == 0:
            self.record["grads"] = {
                n: p.grad.detach().clone()
                for n, p in pl_module.named_parameters()
                if p.grad is not None
            }
        self.record["world_size"] = trainer.world_size
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out / f"rank{trainer.global_rank}.pt")
