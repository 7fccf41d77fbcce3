"""Libri2Mix built from LibriSpeech on the fly equals what the LibriMix script writes, and
dynamic mixing draws new, reproducible, rank-disjoint mixtures every epoch."""

import csv

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from zoo.data.librimix import (
    DynamicMixing,
    EpochSampler,
    LibriMixMetadata,
    LibriMixOnTheFly,
    metadata_csv,
)
from zoo.data.librimix_mini import write_librimix_tree

LSB = 1 / 32768  # one step of the PCM16 files the LibriMix script writes


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_librimix_tree(tmp_path_factory.mktemp("librimix"))


def _script(row, librispeech, wham, rate, mode, kind, tmp_path):
    """LibriMix's documented procedure, written here independently of the zoo: read, gain,
    resample_poly from 16 kHz, truncate / pad, sum; written as 16-bit PCM and read back as the
    files on disk would be. Returns (mixture, [sources])."""
    srcs = [sf.read(librispeech / row[f"source_{i}_path"], dtype="float32")[0] for i in (1, 2)]
    gains = [float(row[f"source_{i}_gain"]) for i in (1, 2)]
    longest = max(len(s) for s in srcs)
    noise = sf.read(wham / row["noise_path"], dtype="float32", stop=longest)[0][:, 0]
    while len(noise) < longest:  # the script's Hann cross-fade repetition
        w = np.hanning(16001)
        up, down = w[: len(w) // 2 + 1], w[len(w) // 2 :: -1]
        head, tail = noise[: len(noise) - len(down)], noise[len(noise) - len(down) :]
        base = sf.read(wham / row["noise_path"], dtype="float32")[0][:, 0]
        noise = np.concatenate((head, tail * down + base[: len(up)] * up, base[len(up) :]))
    noise = noise[:longest]
    signals = [s * g for s, g in zip(srcs, gains, strict=True)]
    signals.append(noise * float(row["noise_gain"]))
    signals = [resample_poly(s, rate, 16000) for s in signals]
    n = (min if mode == "min" else max)(len(s) for s in signals)
    signals = [s[:n] if len(s) >= n else np.pad(s, (0, n - len(s))) for s in signals]
    s1, s2, noise = signals
    mix = {"sep_clean": s1 + s2, "sep_noisy": s1 + s2 + noise, "enh_single": s1 + noise}[kind]
    refs = [s1] if kind == "enh_single" else [s1, s2]

    def written(x):
        path = tmp_path / "x.wav"
        sf.write(path, x, rate)  # soundfile's default for WAV: 16-bit PCM, as the script
        return sf.read(path, dtype="float32")[0]

    return written(mix), [written(r) for r in refs]


@pytest.mark.parametrize(
    "task,rate,mode",
    [
        ("sep_clean", 8000, "min"),
        ("sep_clean", 16000, "max"),
        ("sep_noisy", 8000, "max"),
        ("enh_single", 8000, "min"),
    ],  # fmt: skip
)
def test_on_the_fly_items_equal_the_files_the_librimix_script_writes(task, rate, mode, tree,
                                                                     tmp_path):  # fmt: skip
    csv_path = metadata_csv(tree["metadata"], "test")
    md = LibriMixMetadata(csv_path, tree["librispeech"], tree["wham"])
    ds = LibriMixOnTheFly(md, task, rate, mode, segment=None, random_segments=False)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(ds) == len(rows)
    for i, row in enumerate(rows):
        item = ds[i]
        mix, refs = _script(row, tree["librispeech"], tree["wham"], rate, mode, task, tmp_path)
        assert item["id"] == row["mixture_ID"]
        assert item["mix"].shape == (1, len(mix))
        assert item["sources"].shape == (len(refs), 1, len(mix))
        # within the PCM16 rounding of the written files (half a step, and the 32767 / 32768
        # scale of soundfile's write and read)
        tol = 1.5 * LSB + np.abs(mix).max() / 32768
        assert np.abs(item["mix"][0].numpy() - mix).max() <= tol
        for got, want in zip(item["sources"][:, 0].numpy(), refs, strict=True):
            assert np.abs(got - want).max() <= tol


def test_the_zoos_own_resampler_would_not_give_the_published_signals(tree):
    """Why resample_poly and not soxr here: the two filters differ by far more than the PCM16
    rounding of the published files."""
    import soxr

    row = next(csv.DictReader(open(metadata_csv(tree["metadata"], "test"))))
    x = sf.read(tree["librispeech"] / row["source_1_path"], dtype="float32")[0].astype(np.float64)
    poly, sox = resample_poly(x, 8000, 16000), soxr.resample(x, 16000, 8000, quality="VHQ")
    n = min(len(poly), len(sox))
    assert np.abs(poly[:n] - sox[:n]).max() > 10 * LSB


def test_noisy_tasks_name_the_missing_noise_root(tree):
    md = LibriMixMetadata(metadata_csv(tree["metadata"], "dev"), tree["librispeech"], wham=None)
    with pytest.raises(ValueError, match="data.init_args.wham"):
        LibriMixOnTheFly(md, "sep_noisy", 8000, "min")[0]
    with pytest.raises(FileNotFoundError, match="libri2mix_train-clean-360.csv"):
        metadata_csv(tree["metadata"], "train-360")


def test_dynamic_mixing_is_new_every_epoch_reproducible_and_rank_disjoint(tree):
    md = LibriMixMetadata(metadata_csv(tree["metadata"], "train-100"), tree["librispeech"])
    dm = DynamicMixing(md, 8000, "min", segment=0.5, seed=7)
    first = [dm.draw(0, i)[:2] for i in range(len(dm))]
    assert first != [dm.draw(1, i)[:2] for i in range(len(dm))]  # another epoch, other pairs
    again = DynamicMixing(md, 8000, "min", segment=0.5, seed=7)  # a resumed run
    assert first == [again.draw(0, i)[:2] for i in range(len(again))]
    speakers = {u: u.split("/")[1] for u in dm.utterances}
    assert all(speakers[a] != speakers[b] for a, b in first)  # two speakers in every mixture
    item = dm[(3, 1)]
    assert item["mix"].shape == (1, 4000) and item["sources"].shape == (2, 1, 4000)
    torch.testing.assert_close(item["mix"], item["sources"].sum(0))
    assert item["id"].endswith("@3")
    torch.testing.assert_close(dm[(3, 1)]["mix"], item["mix"])  # a function of (epoch, item)
    # two ranks: disjoint items of each epoch, together the whole epoch once
    ranks = []
    for rank in (0, 1):
        sampler = EpochSampler(dm, seed=7)
        sampler.num_replicas, sampler.rank = 2, rank
        sampler.num_samples, sampler.total_size = len(dm) // 2, len(dm) // 2 * 2
        sampler.set_epoch(5)
        ranks.append(list(sampler))
    assert all(e == 5 for e, _ in ranks[0] + ranks[1])
    idx = [{i for _, i in r} for r in ranks]
    assert not idx[0] & idx[1] and len(idx[0] | idx[1]) == len(dm) // 2 * 2


def _files(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_zoo_prepare_libri2mix_writes_the_classic_tree_resumably(tree, tmp_path, capsys):
    from zoo.cli import main
    from zoo.data.libri2mix import Libri2MixDataset

    before = _files(tree["librispeech"])
    out = tmp_path / "Libri2Mix"
    (out / "wav8k" / "min").mkdir(parents=True)
    (out / "wav8k" / "min" / "notes.txt").write_text("mine")
    args = ["prepare", "libri2mix", "--librispeech", str(tree["librispeech"]), "--metadata",
            str(tree["metadata"]), "--out", str(out)]  # fmt: skip
    assert main([*args, "--wham", str(tree["wham"])]) == 0
    # the files the Libri2Mix loader reads, equal to the items built on the fly
    md = LibriMixMetadata(metadata_csv(tree["metadata"], "dev"), tree["librispeech"], tree["wham"])
    fly = LibriMixOnTheFly(md, "sep_noisy", 8000, "min", segment=None, random_segments=False)
    files = Libri2MixDataset(out, "dev", "sep_noisy", 8000, "min")
    assert len(files) == len(fly)
    for i in range(len(fly)):
        a, b = files[i], fly[i]
        assert a["id"] == b["id"]
        assert (a["mix"] - b["mix"]).abs().max() <= 1.5 * LSB + b["mix"].abs().max() / 32768
        assert (a["sources"] - b["sources"]).abs().max() <= 2 * LSB
    # resumable: a rerun rewrites only what is missing; nothing else is touched
    written = _files(out)
    gone = next((out / "wav8k/min/dev/s2").iterdir())
    gone.unlink()
    assert main([*args, "--wham", str(tree["wham"])]) == 0
    again = _files(out)
    assert gone in again and {p: t for p, t in again.items() if p != gone} == {
        p: t for p, t in written.items() if p != gone
    }
    assert (out / "wav8k/min/notes.txt").read_text() == "mine"
    assert _files(tree["librispeech"]) == before  # nothing written under LibriSpeech
    # a metadata table that is not the one this writes is refused, not replaced
    table = out / "wav8k/min/metadata/mixture_dev_mix_clean.csv"
    table.write_text("mine\n")
    assert main(args) == 2 and table.read_text() == "mine\n"
    assert "differs from the table" in capsys.readouterr().err


def test_zoo_prepare_libri2mix_metadata_downloads_and_checks(tree, tmp_path):
    import functools
    import http.server
    import threading

    from zoo.data.librimix import download_metadata

    serve = tmp_path / "served" / "metadata" / "Libri2Mix"
    serve.mkdir(parents=True)
    for name in ("train-clean-100", "train-clean-360", "dev-clean", "test-clean"):
        src = tree["metadata"] / f"libri2mix_{name}.csv"
        src = src if src.is_file() else tree["metadata"] / "libri2mix_dev-clean.csv"
        (serve / f"libri2mix_{name}.csv").write_text(src.read_text())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(serve))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        paths = download_metadata(tmp_path / "md", url)
        assert sorted(p.name for p in paths) == sorted(p.name for p in serve.iterdir())
        assert download_metadata(tmp_path / "md", url) == paths  # equal files: kept
        (tmp_path / "md" / "libri2mix_dev-clean.csv").write_text("changed")
        with pytest.raises(FileExistsError, match="differs"):
            download_metadata(tmp_path / "md", url)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConnectionError, match="cannot fetch"):
        download_metadata(tmp_path / "y", url)  # the server is gone
