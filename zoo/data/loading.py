"""Loader helpers every datamodule shares: the training loader, the evaluation sampler, and
the random generator that training items draw from."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["EvalSampler", "item_rng", "reseed_item_rng", "train_loader"]

_PROCESS_RNG: dict[int, random.Random] = {}


def item_rng() -> random.Random:
    """A generator for one training item's random choices (segments, gains, partners).

    Drawn from a per-process generator seeded from torch's seed, the DDP rank and the loader
    worker: after ``seed_everything`` every rank starts from the same global ``random`` state, so
    with in-process loading (``num_workers=0``) every GPU would otherwise draw the same random
    chunks (the DDP test caught MUSDB18 batches identical on both ranks).
    """
    pid = os.getpid()
    if pid not in _PROCESS_RNG:  # also after a fork: loader workers get their own
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        worker = torch.utils.data.get_worker_info()
        entropy = [torch.initial_seed() % 2**63, rank, worker.id + 1 if worker else 0]
        seed = np.random.SeedSequence(entropy).generate_state(2, np.uint64)
        _PROCESS_RNG.clear()
        _PROCESS_RNG[pid] = random.Random(int(seed[0]) << 64 | int(seed[1]))
    return random.Random(_PROCESS_RNG[pid].getrandbits(64))


def reseed_item_rng(seed: int) -> None:
    """Restart this process's item generator from ``seed`` (resumable runs re-seed it at each
    checkpoint; loader workers started later derive their own from torch's seed as before)."""
    _PROCESS_RNG.clear()
    _PROCESS_RNG[os.getpid()] = random.Random(seed)


def train_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """The training loader every datamodule uses: shuffled, full batches only."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class EvalSampler(DistributedSampler):
    """Splits evaluation items over processes without padding, so each item is scored once.

    Lightning's default ``DistributedSampler`` repeats items to even out the ranks, which biases
    the mean; metrics here are summed and counted over ranks (torchmetrics), so uneven shards are
    exact. Being a ``DistributedSampler``, Lightning leaves it in place.
    """

    def __init__(self, dataset: Dataset):
        import torch.distributed as dist

        ddp = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if ddp else 1
        if 0 < len(dataset) < world:  # a rank with no item: Lightning stops on it, unexplained
            raise ValueError(
                f"{len(dataset)} evaluation item(s) ({type(dataset).__name__}) for {world} "
                f"processes: each process needs at least one; run on at most {len(dataset)} "
                "device(s), or evaluate more items (a larger split, or a higher limit)"
            )
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if ddp else 1,
            rank=dist.get_rank() if ddp else 0,
            shuffle=False,
        )

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))
