"""The temporal convolutional network of Conv-TasNet, with TDCN++'s changes as flags."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .norms import make_norm

__all__ = ["ConvCache", "TCNBlock", "TCN", "run_block"]


def run_block(block: nn.Module, *args, checkpoint: bool = False):
    """``block(*args)``; with ``checkpoint`` and gradients on, the block keeps only its inputs
    and recomputes its activations in the backward pass (``torch.utils.checkpoint``): the same
    values and gradients for about a third more compute, and a fraction of the memory, which is
    what lets the paper-size music networks train at batch 1 on 8 GiB (BENCHMARKS.md)."""
    if checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
    return block(*args)


class ConvCache:
    """The last ``context`` input frames of one causal convolution, for streaming: the offline
    model pads ``context`` zero frames on the left, so a stream starts from zeros and
    :meth:`extend` puts the kept frames in front of each new block, which makes the convolution's
    outputs on the block exactly the offline outputs for those frames."""

    def __init__(self, context: int):
        self.context = context
        self.tail: Tensor | None = None

    def extend(self, x: Tensor) -> Tensor:
        """``(B, C, n)`` new frames → ``(B, C, context + n)``: the kept frames, then ``x``."""
        if self.tail is None:
            self.tail = x.new_zeros(x.shape[0], x.shape[1], self.context)
        y = torch.cat([self.tail, x], -1)
        self.tail = y[..., y.shape[-1] - self.context :]
        return y


class TCNBlock(nn.Module):
    """1x1 conv → PReLU → norm → dilated depthwise conv → PReLU → norm → residual and skip convs.

    ``causal``: the depthwise conv sees only the current and past frames (left padding of
    ``(kernel_size - 1) * dilation`` frames, the same outputs as Asteroid's pad-both-and-trim
    layout); with a :class:`ConvCache` it runs on a block of new frames of a stream.

    Shape:
        ``(B, B_chan, T)`` → residual ``(B, B_chan, T)``, skip ``(B, Sc, T)``.
    """

    def __init__(
        self,
        bn_chan: int,
        hid_chan: int,
        skip_chan: int,
        kernel_size: int,
        dilation: int,
        norm: str,
        residual: bool = True,
        causal: bool = False,
    ):
        super().__init__()
        self.in_conv = nn.Conv1d(bn_chan, hid_chan, 1)
        self.act1 = nn.PReLU()
        self.norm1 = make_norm(norm, hid_chan)
        # causal: no padding in the conv, the past is put in front in forward (zeros or a cache)
        self.context = (kernel_size - 1) * dilation if causal else 0
        padding = 0 if causal else (kernel_size - 1) * dilation // 2
        self.dconv = nn.Conv1d(
            hid_chan, hid_chan, kernel_size, padding=padding, dilation=dilation, groups=hid_chan
        )
        self.act2 = nn.PReLU()
        self.norm2 = make_norm(norm, hid_chan)
        self.res_conv = nn.Conv1d(hid_chan, bn_chan, 1) if residual else None
        self.skip_conv = nn.Conv1d(hid_chan, skip_chan, 1) if skip_chan else None

    def forward(self, x: Tensor, cache: ConvCache | None = None) -> tuple[Tensor, Tensor | None]:
        y = self.norm1(self.act1(self.in_conv(x)))  # (B, H, T)
        if cache is not None:  # a stream's block: the frames before it come from the cache
            y = cache.extend(y)
        elif self.context:
            y = torch.nn.functional.pad(y, (self.context, 0))
        y = self.norm2(self.act2(self.dconv(y)))
        skip = self.skip_conv(y) if self.skip_conv is not None else None
        res = self.res_conv(y) if self.res_conv is not None else None
        return res, skip


class TCN(nn.Module):
    """Mask estimator of Conv-TasNet (Luo & Mesgarani 2019); TDCN++ (Kavalerov 2019) by flags.

    Args:
        in_chan: encoder filters <N>.
        n_src: number of masks (outputs) <C>, M for MixIT.
        bn_chan: bottleneck channels <B>.
        hid_chan: channels inside each block <H>.
        skip_chan: skip-connection channels <Sc> (0: masks from the residual path).
        kernel_size: depthwise kernel <P>.
        n_blocks: blocks per repeat <X>, dilations 1, 2, ..., 2^(X-1).
        n_repeats: repeats <R>.
        norm: ``gLN`` (Conv-TasNet), ``fLN`` (TDCN++), ``cLN``, ``BN``.
        mask_act: ``relu`` (Asteroid's Conv-TasNet), ``sigmoid`` (paper / torchaudio), ``softmax``.
        repeat_skips: TDCN++ longer-range skip-residual connections: the input of repeat r > 0 gets
            a 1x1-conv transform of the input of repeat r - 1 added.
        block_scales: TDCN++ learnable scale on each block's residual output, initialised to
            0.9^b for block index b within its repeat.
        checkpoint_blocks: recompute each block's activations in the backward pass instead of
            keeping them (:func:`run_block`).
        causal: causal depthwise convs (:class:`TCNBlock`); with a per-frame norm (``cLN``)
            every mask frame depends only on the current and past frames, so the network can
            run on a stream (:meth:`stream_caches`).

    With skip connections the last block has no residual conv: its output would feed nothing
    (torchaudio's layout). Asteroid's layout keeps one; its two tensors are dropped when such a
    checkpoint is loaded (:meth:`_drop_dead_residual`), so Asteroid weights still load strictly
    and give the same outputs, and every parameter here is trained (DDP refuses unused ones).

    Shape:
        ``(B, N, frames)`` → masks ``(B, n_src, N, frames)``.
    """

    def __init__(
        self,
        in_chan: int,
        n_src: int,
        bn_chan: int = 128,
        hid_chan: int = 512,
        skip_chan: int = 128,
        kernel_size: int = 3,
        n_blocks: int = 8,
        n_repeats: int = 3,
        norm: str = "gLN",
        mask_act: str = "relu",
        repeat_skips: bool = False,
        block_scales: bool = False,
        checkpoint_blocks: bool = False,
        causal: bool = False,
    ):
        super().__init__()
        if causal and norm not in ("cLN", "BN", "none"):
            raise ValueError(
                f"causal=True needs a per-frame norm, got norm={norm!r}: use norm='cLN' (gLN and "
                "fLN take statistics over the whole input, so a frame would see the future)"
            )
        self.checkpoint_blocks, self.causal = checkpoint_blocks, causal
        self.n_src, self.in_chan, self.n_blocks, self.n_repeats = (
            n_src,
            in_chan,
            n_blocks,
            n_repeats,
        )
        self.in_norm = make_norm(norm, in_chan)
        self.bottleneck = nn.Conv1d(in_chan, bn_chan, 1)
        n_total = n_repeats * n_blocks
        self.blocks = nn.ModuleList(
            TCNBlock(
                bn_chan,
                hid_chan,
                skip_chan,
                kernel_size,
                2 ** (i % n_blocks),
                norm,
                residual=i < n_total - 1 or not skip_chan,
                causal=causal,
            )
            for i in range(n_total)
        )
        self.repeat_skips = (
            nn.ModuleList(nn.Conv1d(bn_chan, bn_chan, 1) for _ in range(n_repeats - 1))
            if repeat_skips
            else None
        )
        if block_scales:
            init = torch.tensor([0.9**x for x in range(n_blocks)]).repeat(n_repeats)
            self.block_scales = nn.Parameter(init)
        else:
            self.register_parameter("block_scales", None)
        self.use_skip = bool(skip_chan)
        self.register_load_state_dict_pre_hook(TCN._drop_dead_residual)
        self.mask_prelu = nn.PReLU()
        self.mask_conv = nn.Conv1d(skip_chan or bn_chan, n_src * in_chan, 1)
        if mask_act == "relu":
            self.mask_act = nn.ReLU()
        elif mask_act == "sigmoid":
            self.mask_act = nn.Sigmoid()
        elif mask_act == "softmax":
            self.mask_act = nn.Softmax(dim=1)
        else:
            raise ValueError(f"unknown mask_act {mask_act!r}: use relu, sigmoid or softmax")

    def _drop_dead_residual(self, state_dict: dict, prefix: str, *args) -> None:
        """Remove the last block's residual conv of Asteroid-layout checkpoints (it feeds
        nothing when the masks come from the skip path); every other key must still match."""
        last = len(self.blocks) - 1
        if self.blocks[last].res_conv is None:
            for name in ("weight", "bias"):
                state_dict.pop(f"{prefix}blocks.{last}.res_conv.{name}", None)

    def stream_caches(self) -> list[ConvCache]:
        """One fresh cache per block, for :meth:`forward` on a stream's consecutive blocks."""
        if not self.causal:
            raise ValueError("only a causal TCN (causal=True) can run on a stream")
        return [ConvCache(block.context) for block in self.blocks]

    def forward(self, w: Tensor, caches: list[ConvCache] | None = None) -> Tensor:
        """Masks of the frames ``w``; ``caches`` (:meth:`stream_caches`): ``w`` is the next
        block of frames of a stream, and the caches carry each block's past to the next."""
        b, _, frames = w.shape
        x = self.bottleneck(self.in_norm(w))  # (B, B_chan, frames)
        skip_sum = 0.0
        repeat_in = x
        for i, block in enumerate(self.blocks):
            r, k = divmod(i, self.n_blocks)
            if k == 0 and r > 0 and self.repeat_skips is not None:
                x = x + self.repeat_skips[r - 1](repeat_in)
                repeat_in = x
            if caches is None:
                res, skip = run_block(block, x, checkpoint=self.checkpoint_blocks)
            else:
                res, skip = block(x, caches[i])
            if res is not None:
                if self.block_scales is not None:
                    res = res * self.block_scales[i]
                x = x + res
            if skip is not None:
                skip_sum = skip_sum + skip
        # one name for every intermediate from here on, so that at inference each is freed as
        # soon as the next exists (the peak is the mask scores and the masks, as in torchaudio)
        x = skip_sum if self.use_skip else x  # (B, Sc, frames)
        del skip_sum, repeat_in
        x = self.mask_conv(self.mask_prelu(x))  # (B, n_src * N, frames)
        return self.mask_act(x.view(b, self.n_src, self.in_chan, frames))  # (B, n_src, N, frames)
