"""The warmup + cosine schedule over the run's step budget, stepped every optimiser step."""

import math

import pytest
import torch

from zoo.optim import WarmupCosine


def _rates(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


def test_linear_warmup_then_cosine_to_the_final_scale():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=14, final_scale=0.1)
    lr = _rates(sched, 15)
    assert lr[:4] == pytest.approx([5e-5, 1e-4, 1.5e-4, 2e-4])  # (step + 1) / warmup
    assert lr[4] == pytest.approx(2e-4) and lr[9] == pytest.approx(2e-4 * (0.1 + 0.9 * 0.5))
    assert lr[14] == pytest.approx(2e-5)  # the end of the budget: final_scale x the rate
    assert all(a >= b for a, b in zip(lr[4:], lr[5:], strict=False))  # decays monotonically
    assert math.isclose(sched.scale(9), 0.55)
    with pytest.raises(ValueError, match="final_scale"):
        WarmupCosine(opt, final_scale=2.0)


def test_the_system_gives_the_schedule_the_runs_step_budget(quiet_trainer):
    from functools import partial

    from tests.conftest import TINY_CONVTASNET
    from zoo.backbones import ConvTasNet
    from zoo.losses import PITLoss
    from zoo.system import SeparationSystem

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            ref = torch.randn(2, 1, 800)
            return {"mix": ref.sum(0), "ref": ref}

    system = SeparationSystem(
        ConvTasNet(**TINY_CONVTASNET), PITLoss(), scheduler=partial(WarmupCosine, warmup_steps=2)
    )
    trainer = quiet_trainer(max_steps=6, limit_val_batches=0)
    trainer.fit(system, torch.utils.data.DataLoader(Data(), batch_size=2))
    sched = trainer.lr_scheduler_configs[0]
    assert sched.interval == "step" and sched.scheduler.total_steps == 6
    assert sched.scheduler.last_epoch == 6  # stepped once per optimiser step
