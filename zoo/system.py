"""SeparationSystem: one LightningModule for every backbone and every objective."""

from __future__ import annotations

import time
from collections.abc import Iterator

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from .backbones.base import Backbone
from .backbones.capabilities import AuxiliaryLoss, InputStatistics, NeedsSources, TestProtocol
from .data.base import SeparationData
from .eval.metrics import bss_eval_items, match_and_score, oracle_stitch
from .inference import iter_chunks, separate_chunked
from .optim import StepSchedule


def leave_process_group() -> None:
    """Close this process's DDP process group, if it has one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["SeparationSystem", "IncompatibleDataError", "check_compatible"]


def _adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def full_precision(x: Tensor) -> Tensor:
    """Backbone outputs as losses and metrics take them: float32 (float64 kept), whatever
    precision the network ran in (``--trainer.precision=bf16-mixed`` or ``16-mixed``)."""
    return x.float() if x.is_floating_point() and x.dtype != torch.float64 else x


def _no_autocast(device: torch.device):
    """Losses and metrics outside autocast: their reductions, matmuls and STFTs in float32 or
    float64 (SI-SDR of near-perfect estimates, BSS Eval), never in bf16 / fp16."""
    return torch.autocast(device.type, enabled=False)


class IncompatibleDataError(ValueError):
    """The data and the backbone disagree on rate, channels or sources."""


def check_compatible(backbone: Backbone, data: SeparationData) -> None:
    """Fail, naming both values and their config keys, when the data and the backbone disagree
    on sample rate, channel count or sources."""
    arch = type(backbone).__name__
    if data.sample_rate != backbone.sample_rate:
        raise IncompatibleDataError(
            f"the data are read at {data.sample_rate} Hz (data.init_args.sample_rate) but "
            f"{arch} works at {backbone.sample_rate} Hz (model.backbone.init_args): give both "
            "the same rate (recipes state it once, in the backbone)"
        )
    if backbone.audio_channels is not None and backbone.audio_channels != data.audio_channels:
        raise IncompatibleDataError(
            f"the data have {data.audio_channels} channel(s) but {arch} takes "
            f"{backbone.audio_channels} (model.backbone.init_args): use a backbone for "
            f"{data.audio_channels}-channel input"
        )
    train_channels = data.train_channels or data.audio_channels
    if backbone.audio_channels is not None and backbone.audio_channels != train_channels:
        raise IncompatibleDataError(
            f"the data train on {train_channels}-channel items (data.init_args.random_channel) "
            f"but {arch} takes {backbone.audio_channels}: set random_channel: false, or use a "
            "backbone that separates channels independently"
        )
    if backbone.ordered:
        if data.source_names is None or list(data.source_names) != list(backbone.sources):
            raise IncompatibleDataError(
                f"{arch} outputs the named targets {backbone.sources} "
                "(model.backbone.init_args.sources) but the data's references are "
                f"{data.source_names or f'{data.n_src} anonymous sources'} "
                "(data.init_args.targets): name the same targets in the same order"
            )
    elif backbone.n_src < data.n_src:
        raise IncompatibleDataError(
            f"{arch} has {backbone.n_src} outputs (model.backbone.init_args) for "
            f"{data.n_src} sources per item in the data: it needs at least as many outputs"
        )


class SeparationSystem(L.LightningModule):
    """Train any backbone with any objective; validate and test on one supervised scale.

    Args:
        backbone: a :class:`~zoo.backbones.Backbone`, ``(B, C, T)`` → ``(B, S, C, T)``.
        loss: ``PITLoss``, ``MixITLoss``, ``HungarianLoss``, ``FixedOrderLoss`` or
            ``SemiSupervisedLoss``; called as ``loss(est, batch["ref"])`` and returning
            ``(scalar, info)``.
        optimizer: optimiser factory (default Adam, lr 1e-3, as in the Conv-TasNet recipes).
        scheduler: LR scheduler factory; ``ReduceLROnPlateau`` is stepped on ``monitor`` every
            epoch; a :class:`~zoo.optim.StepSchedule` (warmup + cosine) every optimiser step,
            over the run's step budget unless it states its own.
        monitor: validation metric for the scheduler (``val/si_sdr``, maximised).
        report_sdr: also report BSS Eval SDR / SDRi at test time (slower).
        bss_eval: at test time, score every item with BSS Eval v4 as museval does (SDR, ISR,
            SIR, SAR on 1 s windows, median over windows, then over tracks; per target).
        eval_chunk_seconds: separate validation/test items in chunks of this length with
            overlap-add (bounded memory for whole songs); ``None``: in one pass.
        flush_denormal: on the CPU, flush denormal floats to zero while training (a speed
            setting: denormals, which small gradients produce, are slow on x86; measured 18 %
            of an AudioSlots mini step). Off by default: it is process-wide.
        input_stats_batches: when a fresh fit starts (not a resumed one), a backbone with
            input statistics (:class:`~zoo.backbones.capabilities.InputStatistics`: Open-Unmix,
            Meta-TasNet) reads the mixtures of this many training batches; 0: never.

    Estimates are matched to the references fixed when the backbone's outputs are named
    (``backbone.sources``: music), by PIT otherwise. Validation and test report SI-SDR and
    SI-SDRi of the matched estimates (:func:`zoo.eval.metrics.match_and_score`), accumulated
    with torchmetrics so DDP ranks are combined. ``test_step`` returns one row per item (and the
    separation time); the results callback gathers and writes them: the module keeps no
    results. A backbone that separates long inputs chunk by chunk (``test_chunk`` of
    :class:`~zoo.backbones.capabilities.TestProtocol`) is also
    scored with its chunks' outputs ordered by the references (``oracle_stitch_*`` columns, the
    AudioSlots paper's protocol); the headline scores are always its own, blind, order.
    """

    def __init__(
        self,
        backbone: Backbone,
        loss: nn.Module,
        optimizer: OptimizerCallable = _adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/si_sdr",
        report_sdr: bool = False,
        bss_eval: bool = False,
        eval_chunk_seconds: float | None = None,
        input_stats_batches: int = 16,
        flush_denormal: bool = False,
    ):
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(
                f"{type(backbone).__name__} is not a zoo.backbones.Backbone: implement the "
                "backbone contract (zoo/backbones/base.py)"
            )
        backbone.check_contract()
        self.backbone = backbone
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.report_sdr, self.bss_eval = report_sdr, bss_eval
        self.eval_chunk_seconds = eval_chunk_seconds
        self.input_stats_batches = input_stats_batches
        self.flush_denormal = flush_denormal
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MeanMetric()
                for stage in ("val", "test")
                for name in (
                    "si_sdr",
                    "si_sdri",
                    "sdr",
                    "sdri",
                    "oracle_stitch_si_sdri",
                    "clip_si_sdri",
                )  # fmt: skip
            }
        )

    def forward(self, mix: Tensor) -> Tensor:
        return self.backbone(mix)

    def _check_data(self) -> None:
        data = self.trainer.datamodule if self._trainer is not None else None
        if isinstance(data, SeparationData):
            check_compatible(self.backbone, data)

    def prepare_data(self) -> None:
        self._check_data()  # the first hook Lightning calls, before the data are set up

    def setup(self, stage: str) -> None:
        self._check_data()

    def _training_mixtures(self) -> Iterator[Tensor]:
        """Mixtures of the first ``input_stats_batches`` training batches (read lazily: a
        backbone without input statistics never starts the loader)."""
        if self.trainer.datamodule is None:
            raise ValueError(
                f"{type(self.backbone).__name__} initialises its input normalisation from "
                "training batches (input_stats_batches): fit with a datamodule, or set "
                "input_stats_batches=0"
            )
        loader = self.trainer.datamodule.train_dataloader()
        for batch, _ in zip(loader, range(self.input_stats_batches), strict=False):
            yield batch["mix"].to(self.device)

    def on_train_start(self) -> None:
        if self.flush_denormal and self.device.type == "cpu":
            torch.set_flush_denormal(True)

    def teardown(self, stage: str) -> None:
        """A spawned DDP worker (``strategy="ddp_spawn"``) ends with its stage: it closes its
        process group here, since left to the interpreter's exit gloo's threads abort the rank
        (SIGABRT, "terminate called without an active exception") about one run in three on
        CPU. Runs started by ``zoo`` close theirs in :func:`zoo.run.session.run_session`."""
        from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

        launcher = getattr(self.trainer.strategy, "launcher", None)
        if isinstance(launcher, _MultiProcessingLauncher) and launcher._start_method == "spawn":
            leave_process_group()

    def on_fit_start(self) -> None:
        if (
            not isinstance(self.backbone, InputStatistics)
            or not self.input_stats_batches
            or self.trainer.ckpt_path is not None
        ):
            return
        keys = self.backbone.fit_input_stats(self._training_mixtures())
        if keys and self.trainer.world_size > 1:  # ranks saw other batches: take rank 0's
            state = self.backbone.state_dict()
            values = self.trainer.strategy.broadcast({k: state[k].cpu() for k in keys}, src=0)
            with torch.no_grad():
                for k, v in values.items():
                    state[k].copy_(v)

    def training_objective(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of one batch and the values to log; no side effects (no logging),
        so it can be evaluated outside a Trainer (the DDP gradient test does)."""
        if isinstance(self.backbone, NeedsSources):  # a reference row trained on the sources
            est = self.backbone(batch["mix"], batch["ref"])
        else:
            est = self(batch["mix"])  # (B, M, C, T)
        # backbone-specific terms (Meta-TasNet), which may run its modules: in its precision
        aux = (
            self.backbone.auxiliary_loss(batch["ref"])
            if isinstance(self.backbone, AuxiliaryLoss)
            else None
        )
        with _no_autocast(est.device):
            est, ref = full_precision(est), full_precision(batch["ref"])
            if getattr(self.loss, "needs_supervision_mask", False):
                loss, info = self.loss(est, ref, supervised=batch["supervised"])
            else:
                loss, info = self.loss(est, ref)
            logs = {}
            if aux is not None:
                aux = full_precision(aux)
                logs["train/aux_loss"] = aux
                loss = loss + aux
        logs["train/loss"] = loss
        if "supervised_share" in info:
            logs["train/supervised_share"] = info["supervised_share"]
        return loss, logs

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, logs = self.training_objective(batch)
        n = batch["mix"].shape[0]
        for name, value in logs.items():
            self.log(name, value, prog_bar=name == "train/loss", batch_size=n)
        return loss

    def separate(self, batch: dict) -> Tensor:
        """Estimates ``(B, M, C, T)`` of an evaluation batch (chunked when configured)."""
        if isinstance(self.backbone, NeedsSources):  # oracle baselines
            return self.backbone(batch["mix"], batch["sources"])
        if self.eval_chunk_seconds:
            chunk = int(self.eval_chunk_seconds * self.backbone.sample_rate)
            return separate_chunked(
                self.backbone, batch["mix"], chunk, align=not self.backbone.ordered
            )
        return self(batch["mix"])

    def _score(self, est: Tensor, batch: dict, stage: str) -> dict[str, Tensor]:
        sdr = self.report_sdr and stage == "test"
        with _no_autocast(est.device):
            scores = match_and_score(
                full_precision(est),
                full_precision(batch["sources"]),
                full_precision(batch["mix"]),
                sdr=sdr,
                fixed=self.backbone.ordered,
            )
        n = est.shape[0]
        for name in ("si_sdr", "si_sdri", "sdr", "sdri") if sdr else ("si_sdr", "si_sdri"):
            self.metrics[f"{stage}_{name}"].update(scores[name].mean(-1))
            self.log(
                f"{stage}/{name}",
                self.metrics[f"{stage}_{name}"],
                prog_bar=name == "si_sdri",
                batch_size=n,
                on_epoch=True,
                on_step=False,
            )
        return scores

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score(self.separate(batch), batch, "val")
        stitched = self._oracle_stitch(batch)
        if stitched is not None:  # a chunked backbone: the paper's protocol beside the blind
            n = batch["mix"].shape[0]
            for name in ("oracle_stitch_si_sdri", "clip_si_sdri"):
                self.metrics[f"val_{name}"].update(stitched[name])
                self.log(f"val/{name}", self.metrics[f"val_{name}"], batch_size=n, on_epoch=True)

    def target_names(self, n: int) -> list[str]:
        """Names of the ``n`` references in result rows: the backbone's targets when named."""
        names = self.backbone.output_names
        return names[:n] if self.backbone.ordered else [f"s{j + 1}" for j in range(n)]

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        """Scores the batch; returns ``{"rows": one dict per item, "seconds": separation time,
        "audio_seconds": audio separated}`` for the results callback."""
        start = time.perf_counter()
        est = self.separate(batch)
        seconds = time.perf_counter() - start  # separation only, not scoring
        scores = self._score(est, batch, "test")
        names = self.target_names(batch["sources"].shape[1])
        bss = (
            bss_eval_items(est, batch["sources"], names, self.backbone.sample_rate)
            if self.bss_eval
            else None
        )
        stitched = self._oracle_stitch(batch)
        rows = []
        for i, item_id in enumerate(batch["id"]):
            row = {
                "id": item_id,
                "si_sdr": float(scores["si_sdr"][i].mean()),
                "si_sdri": float(scores["si_sdri"][i].mean()),
            }
            if bss is not None:
                row.update(bss[i])
            if stitched is not None:
                row["oracle_stitch_si_sdr"] = float(stitched["oracle_stitch_si_sdr"][i])
                row["oracle_stitch_si_sdri"] = float(stitched["oracle_stitch_si_sdri"][i])
            for j in range(scores["si_sdr"].shape[1]):
                row[f"si_sdr_s{j + 1}"] = float(scores["si_sdr"][i, j])
                row[f"est_for_s{j + 1}"] = int(scores["perm"][i, j])
            rows.append(row)
        audio = est.shape[0] * est.shape[-1] / self.backbone.sample_rate
        return {"rows": rows, "seconds": seconds, "audio_seconds": audio}

    def _oracle_stitch(self, batch: dict) -> dict[str, Tensor] | None:
        """Per item, the scores of the chunk outputs matched to the references chunk by chunk
        (``oracle_stitch_si_sdr(i)``: the whole item; ``clip_si_sdri``: the mean over its
        clips of each clip's PIT-matched SI-SDRi). They need the references: labelled
        reference protocols, never the headline."""
        bb = self.backbone
        chunk = bb.test_chunk if isinstance(bb, TestProtocol) else None
        if not chunk or isinstance(bb, NeedsSources) or batch["mix"].shape[-1] <= chunk:
            return None
        chunks = [full_precision(c) for c in self.backbone.separate_chunks(batch["mix"])]
        with _no_autocast(batch["mix"].device):
            sources, mix = full_precision(batch["sources"]), full_precision(batch["mix"])
            whole = match_and_score(oracle_stitch(chunks, sources), sources, mix, fixed=True)
            clips = [
                match_and_score(c[..., :n], sources[..., s : s + n], mix[..., s : s + n])
                for (s, n, _), c in zip(iter_chunks(mix, chunk), chunks, strict=True)
                if n >= chunk // 2  # a last clip mostly of padding says little
            ]
        return {
            "oracle_stitch_si_sdr": whole["si_sdr"].mean(-1),
            "oracle_stitch_si_sdri": whole["si_sdri"].mean(-1),
            "clip_si_sdri": torch.stack([c["si_sdri"].mean(-1) for c in clips]).mean(0),
        }

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        if isinstance(sched, StepSchedule):  # every step, over the run's budget
            if sched.total_steps is None:
                sched.total_steps = int(self.trainer.estimated_stepping_batches)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": self.monitor, "interval": "epoch"},
        }
