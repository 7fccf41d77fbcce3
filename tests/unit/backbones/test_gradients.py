"""Every trainable parameter of every backbone gets a gradient from one training step.

DDP refuses to train a model with parameters that no forward pass uses (and
``find_unused_parameters=True`` would only hide them at the cost of a graph traversal per step),
so each backbone, in the paper and mini configuration that its recipes build, is run forward in
training mode with a loss on all of its outputs (plus its auxiliary training terms, as the
system adds them), and every parameter with ``requires_grad`` must have a non-zero gradient.
"""

import pytest
import torch

from zoo.backbones.capabilities import AuxiliaryLoss, NeedsSources
from zoo.run.build import build, resolve
from zoo.run.recipe import available_recipes


def _backbone(name, mini, tmp_path):
    run = resolve(
        name,
        data=None if mini else str(tmp_path / "data"),
        results=tmp_path,
        mini_root_dir=tmp_path / "mini",
        prepare_data=False,
    )
    return build(run).model.backbone


# every recipe, in its mini and its paper-scale configuration
CASES = [(name, mini) for name in available_recipes() for mini in (True, False)]


@pytest.mark.parametrize(
    "name,mini", CASES, ids=[f"{n}-{'mini' if m else 'paper'}" for n, m in CASES]
)
def test_every_parameter_gets_a_gradient(name, mini, tmp_path):
    torch.manual_seed(0)
    backbone = _backbone(name, mini, tmp_path).train()
    channels = backbone.audio_channels or 1
    # 0.5 s at the model's rate; 1 s (two chunks) where the slots are carried to the next chunk
    seconds = 1.0 if getattr(backbone, "carry", False) else 0.5
    mix = torch.randn(2, channels, int(seconds * backbone.sample_rate))
    if isinstance(backbone, NeedsSources):  # a reference row trained on the true sources
        est = backbone(mix, torch.randn(2, backbone.n_src, channels, mix.shape[-1]))
    else:
        est = backbone(mix)  # (B, S, C, T)
    loss = est.square().mean()
    if isinstance(backbone, AuxiliaryLoss):
        loss = loss + backbone.auxiliary_loss(torch.randn_like(est))
    loss.backward()
    missing = [
        n
        for n, p in backbone.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
    assert missing == [], f"{name} ({'mini' if mini else 'paper'}): parameters without gradient"
