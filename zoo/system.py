"""SeparationSystem: one LightningModule for every backbone and every objective."""

from __future__ import annotations

import time
import warnings

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as si_sdr_fn

from .losses import NegSISDR, best_matching

__all__ = ["SeparationSystem", "match_and_score", "summarize_bss"]


def _adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def match_and_score(
    est: Tensor, sources: Tensor, mix: Tensor, sdr: bool = False, fixed: bool = False
) -> dict[str, Tensor]:
    """Supervised scores of estimates, whatever objective produced them.

    The ``n_src`` estimates that best match the sources (PIT on negative SI-SDR; with M > n_src
    outputs, the best-matching subset; ``fixed=True``: estimate ``j`` is source ``j``, for named
    sources) are scored with torchmetrics' SI-SDR (zero-mean), and SI-SDRi subtracts the SI-SDR
    of the mixture itself.

    Shape:
        est ``(B, M, C, T)``, sources ``(B, n_src, C, T)``, mix ``(B, C, T)``.
        Returns per-item, per-source ``si_sdr``, ``si_sdri`` ``(B, n_src)`` and ``perm``; with
        ``sdr=True`` also BSS Eval ``sdr`` and ``sdri`` (see :func:`zoo.eval.metrics.bss_sdr`).
    """
    if fixed:
        if est.shape[1] != sources.shape[1]:
            raise ValueError(
                f"fixed matching needs one estimate per source: estimates {tuple(est.shape)}, "
                f"sources {tuple(sources.shape)}"
            )
        perm = torch.arange(sources.shape[1], device=est.device).expand(est.shape[0], -1)
    else:
        perm = best_matching(NegSISDR()(est, sources))  # (B, n_src) from a (B, M, n_src) matrix
    matched = torch.gather(est, 1, perm[:, :, None, None].expand(-1, -1, *est.shape[2:]))
    flat = lambda x: x.flatten(2)  # noqa: E731  (B, n, C*T)
    mix_as_est = flat(mix.unsqueeze(1).expand_as(sources))  # the mixture as every estimate
    si_sdr = si_sdr_fn(flat(matched), flat(sources), zero_mean=True)  # (B, n_src)
    base = si_sdr_fn(mix_as_est, flat(sources), zero_mean=True)
    out = {"si_sdr": si_sdr, "si_sdri": si_sdr - base, "perm": perm}
    if sdr:
        from .eval.metrics import bss_sdr

        d = bss_sdr(flat(matched), flat(sources))
        out["sdr"], out["sdri"] = d, d - bss_sdr(mix_as_est, flat(sources))
    return out


class SeparationSystem(L.LightningModule):
    """Train any backbone with any objective; validate and test on one supervised scale.

    Args:
        backbone: a waveform separator, ``(B, C, T)`` → ``(B, S, C, T)``.
        loss: ``PITLoss``, ``MixITLoss``, ``HungarianLoss`` or ``SemiSupervisedLoss``; called as
            ``loss(est, batch["ref"])`` and returning ``(scalar, info)``.
        optimizer: optimiser factory (default Adam, lr 1e-3, as in the Conv-TasNet recipes).
        scheduler: LR scheduler factory; ``ReduceLROnPlateau`` is stepped on ``monitor``.
        monitor: validation metric for the scheduler (``val/si_sdr``, maximised).
        report_sdr: also report BSS Eval SDR / SDRi at test time (slower).
        match: ``"pit"`` (anonymous sources: best permutation) or ``"fixed"`` (named sources,
            music: output ``j`` is target ``j``).
        bss_eval: at test time, score every item with BSS Eval v4 as museval does (SDR, ISR,
            SIR, SAR on 1 s windows, median over windows, then over tracks; per target), with
            :func:`zoo.eval.bsseval.bss_eval_v4`.
        eval_chunk_seconds: separate validation/test items in chunks of this length with
            overlap-add (bounded memory for whole songs); ``None``: in one pass.
        input_stats_batches: when a fresh fit starts (not a resumed one) and the backbone has
            ``fit_input_stats`` (input normalisation from data statistics: Open-Unmix,
            Meta-TasNet), it is given the mixtures of this many training batches; 0: never.

    Validation and test report SI-SDR and SI-SDRi of the estimates matched to the true sources
    (see :func:`match_and_score`), accumulated with torchmetrics so DDP ranks are combined.
    """

    def __init__(
        self,
        backbone: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerCallable = _adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/si_sdr",
        report_sdr: bool = False,
        match: str = "pit",
        bss_eval: bool = False,
        eval_chunk_seconds: float | None = None,
        input_stats_batches: int = 16,
    ):
        super().__init__()
        self.backbone = backbone
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.report_sdr = report_sdr
        if match not in ("pit", "fixed"):
            raise ValueError(f"match must be 'pit' or 'fixed', got {match!r}")
        self.match, self.bss_eval, self.eval_chunk_seconds = match, bss_eval, eval_chunk_seconds
        self.input_stats_batches = input_stats_batches
        self.test_summary: dict = {}
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MeanMetric()
                for stage in ("val", "test")
                for name in ("si_sdr", "si_sdri", "sdr", "sdri")
            }
        )
        self.test_rows: list[dict] = []
        self.test_timing = {"seconds": 0.0, "audio_seconds": 0.0}

    def forward(self, mix: Tensor) -> Tensor:
        return self.backbone(mix)

    def on_fit_start(self) -> None:
        fit_stats = getattr(self.backbone, "fit_input_stats", None)
        trainer = self.trainer
        if fit_stats is None or not self.input_stats_batches or trainer.ckpt_path is not None:
            return
        if trainer.datamodule is None:
            raise ValueError(
                f"{type(self.backbone).__name__} initialises its input normalisation from "
                "training batches (input_stats_batches): fit with a datamodule, or set "
                "input_stats_batches=0"
            )
        loader = trainer.datamodule.train_dataloader()
        n = self.input_stats_batches
        mixtures = (b["mix"].to(self.device) for b, _ in zip(loader, range(n), strict=False))
        keys = fit_stats(mixtures)
        if trainer.world_size > 1:  # every rank saw other batches: take rank 0's statistics
            state = self.backbone.state_dict()
            values = trainer.strategy.broadcast({k: state[k].cpu() for k in keys}, src=0)
            with torch.no_grad():
                for k, v in values.items():
                    state[k].copy_(v)

    def _loss(self, est: Tensor, batch: dict) -> tuple[Tensor, dict]:
        if getattr(self.loss, "needs_supervision_mask", False):
            return self.loss(est, batch["ref"], supervised=batch["supervised"])
        return self.loss(est, batch["ref"])

    def training_objective(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of one batch and the values to log; no side effects (no logging),
        so it can be evaluated outside a Trainer (the DDP gradient test does)."""
        est = self(batch["mix"])  # (B, M, C, T)
        loss, info = self._loss(est, batch)
        logs = {}
        if hasattr(self.backbone, "auxiliary_loss"):  # backbone-specific terms (Meta-TasNet)
            aux = self.backbone.auxiliary_loss(batch["ref"])
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

    def _eval_step(self, batch: dict, stage: str) -> dict[str, Tensor]:
        start = time.perf_counter()
        if getattr(self.backbone, "needs_sources", False):  # oracle baselines
            est = self.backbone(batch["mix"], batch["sources"])
        elif self.eval_chunk_seconds:
            from .inference import separate_chunked

            chunk = int(self.eval_chunk_seconds * self.backbone.sample_rate)
            est = separate_chunked(self.backbone, batch["mix"], chunk, align=self.match == "pit")
        else:
            est = self(batch["mix"])
        if stage == "test":  # real-time factor: separation only, not scoring
            self.test_timing["seconds"] += time.perf_counter() - start
            rate = getattr(self.backbone, "sample_rate", None)
            if rate:
                self.test_timing["audio_seconds"] += est.shape[0] * est.shape[-1] / rate
        sdr = self.report_sdr and stage == "test"
        scores = match_and_score(
            est, batch["sources"], batch["mix"], sdr=sdr, fixed=self.match == "fixed"
        )
        if stage == "test" and self.bss_eval:
            scores["bss"] = self._bss_eval(est, batch["sources"])
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
        self._eval_step(batch, "val")

    def on_test_epoch_start(self) -> None:
        self.test_rows = []
        self.test_timing = {"seconds": 0.0, "audio_seconds": 0.0}

    def _names(self, n: int) -> list[str]:
        names = list(getattr(self.backbone, "sources", None) or [])
        return names[:n] if len(names) >= n else [f"s{j + 1}" for j in range(n)]

    def _bss_eval(self, est: Tensor, sources: Tensor) -> list[dict[str, float]]:
        """Per item: ``{"<metric>_<target>": median over 1 s windows}`` (museval's v4)."""
        import numpy as np

        from .eval.bsseval import METRICS, bss_eval_v4

        names = self._names(sources.shape[1])
        rate = int(getattr(self.backbone, "sample_rate", 44100))
        out = []
        for b in range(est.shape[0]):
            ref = sources[b].double().cpu().numpy().transpose(0, 2, 1)  # (S, T, C)
            e = est[b].double().cpu().numpy().transpose(0, 2, 1)  # fixed order: output j = j
            framewise = bss_eval_v4(
                ref, e, win=rate, hop=rate, names=names, silent_estimates="score"
            )
            with warnings.catch_warnings():  # all-NaN targets (silent throughout) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                out.append(
                    {
                        f"{m}_{name}": float(np.nanmedian(framewise[m][j]))
                        for m in METRICS
                        for j, name in enumerate(names)
                    }
                )
        return out

    def test_step(self, batch: dict, batch_idx: int) -> None:
        scores = self._eval_step(batch, "test")
        for i, item_id in enumerate(batch["id"]):
            row = {
                "id": item_id,
                "si_sdr": float(scores["si_sdr"][i].mean()),
                "si_sdri": float(scores["si_sdri"][i].mean()),
            }
            if "bss" in scores:
                row.update(scores["bss"][i])
            for j in range(scores["si_sdr"].shape[1]):
                row[f"si_sdr_s{j + 1}"] = float(scores["si_sdr"][i, j])
                row[f"est_for_s{j + 1}"] = int(scores["perm"][i, j])
            self.test_rows.append(row)

    def on_test_epoch_end(self) -> None:
        # Per-item rows from every rank, for the per-item CSV (metrics are synced by torchmetrics).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, self.test_rows)
            self.test_rows = [r for part in gathered for r in part]
        n_src = getattr(self.backbone, "n_src", None) or 1
        self.test_summary = summarize_bss(self.test_rows, self._names(n_src))

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": self.monitor, "interval": "epoch"},
        }


def summarize_bss(rows: list[dict], names: list[str]) -> dict:
    """museval's aggregation: per target, the median over tracks of the per-track medians; the
    headline ``sdr`` etc. average the per-target medians (as papers report "avg SDR")."""
    import numpy as np

    from .eval.bsseval import METRICS

    if not rows or f"sdr_{names[0]}" not in rows[0]:
        return {}
    targets = {}
    for name in names:
        targets[name] = {
            m: round(float(np.nanmedian([r[f"{m}_{name}"] for r in rows])), 4) for m in METRICS
        }
    avg = {m: round(float(np.mean([t[m] for t in targets.values()])), 4) for m in METRICS}
    return {"targets": targets, **avg}
