"""Libri2Mix reading (real format), the mini generator, MixIT batches and bad input."""

import csv
import hashlib
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import TINY_SPEC
from zoo.data.audio import AudioError, read_audio
from zoo.data.libri2mix import (
    DatasetNotFoundError,
    EvalSampler,
    Libri2MixDataModule,
    Libri2MixDataset,
    MixtureOfMixtures,
)
from zoo.data.mini import MiniSpec, prepare_libri2mix_mini

HEADERS = {
    "mix_clean": "mixture_ID,mixture_path,source_1_path,source_2_path,length",
    "mix_both": "mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length",
    "mix_single": "mixture_ID,mixture_path,source_1_path,noise_path,length",
}


def test_mini_layout_is_libri2mix(tiny_libri2mix):
    base = tiny_libri2mix / "wav8k" / "min"
    for subset, n in (("train-100", 16), ("dev", 4), ("test", 5)):
        for d in ("mix_clean", "mix_both", "mix_single", "s1", "s2", "noise"):
            assert len(list((base / subset / d).glob("*.wav"))) == n
        for t, header in HEADERS.items():
            lines = (base / "metadata" / f"mixture_{subset}_{t}.csv").read_text().splitlines()
            assert lines[0] == header and len(lines) == n + 1
    row = next(csv.DictReader(open(base / "metadata" / "mixture_test_mix_both.csv")))
    info = sf.info(row["mixture_path"])
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert info.frames == int(row["length"])
    a, b = row["mixture_ID"].split("_")
    assert a.split("-")[0] != b.split("-")[0]  # two different speakers
    mix = sf.read(row["mixture_path"])[0]
    parts = sum(sf.read(row[c])[0] for c in ("source_1_path", "source_2_path", "noise_path"))
    assert np.abs(mix - parts).max() < 3 / 32768  # mix = s1 + s2 + noise up to PCM16 rounding


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.wav")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_mini_is_deterministic_by_seed(tmp_path):
    spec = MiniSpec(**{**TINY_SPEC, "n_train": 4, "n_dev": 2, "n_test": 2})
    a = prepare_libri2mix_mini(tmp_path / "a", spec)
    b = prepare_libri2mix_mini(tmp_path / "b", spec)
    c = prepare_libri2mix_mini(tmp_path / "c", MiniSpec(**{**spec.__dict__, "seed": 1}))
    assert _digest(a) == _digest(b) != _digest(c)


def test_dataset_items_and_tasks(tiny_libri2mix):
    ds = Libri2MixDataset(tiny_libri2mix, "test", "sep_noisy")
    item = ds[0]
    assert item["mix"].shape[0] == 1 and item["sources"].shape[:2] == (2, 1)
    assert item["sources"].shape[-1] == item["mix"].shape[-1] == int(ds.rows[0]["length"])
    enh = Libri2MixDataset(tiny_libri2mix, "test", "enh_single")[0]
    assert enh["sources"].shape[0] == 1
    seg = Libri2MixDataset(tiny_libri2mix, "train-100", "sep_clean", segment=1.0)[3]
    assert seg["mix"].shape == (1, 8000) and seg["sources"].shape == (2, 1, 8000)


def test_moved_dataset_falls_back_to_root_relative_paths(tiny_libri2mix, tmp_path):
    moved = tmp_path / "elsewhere" / "Libri2Mix"
    shutil.copytree(tiny_libri2mix, moved)
    # The CSVs name absolute paths on the machine that generated the data; make them dangle.
    csv_path = moved / "wav8k/min/metadata/mixture_dev_mix_clean.csv"
    csv_path.write_text(csv_path.read_text().replace(str(tiny_libri2mix), "/nonexistent/Libri2Mix"))
    ds = Libri2MixDataset(moved, "dev", "sep_clean")
    assert ds.resolve(ds.rows[0]["mixture_path"]) == moved / "wav8k/min/dev/mix_clean" / (
        ds.rows[0]["mixture_ID"] + ".wav"
    )
    assert ds[0]["sources"].shape[0] == 2


def test_missing_root_says_what_was_expected_and_how_to_get_the_mini_set(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        Libri2MixDataset(tmp_path / "nope", "test")
    assert str(tmp_path / "nope") in str(err.value)
    assert "zoo prepare libri2mix-mini" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="mixture_test_mix_clean.csv"):
        Libri2MixDataset(tmp_path / "empty", "test")


def test_csv_row_pointing_at_missing_file_names_it(tiny_libri2mix, tmp_path):
    root = tmp_path / "Libri2Mix"
    shutil.copytree(tiny_libri2mix, root)
    ds = Libri2MixDataset(root, "test", "sep_clean")
    (root / "wav8k/min/test/s2" / (ds.rows[1]["mixture_ID"] + ".wav")).unlink()
    for r in ds.rows:  # make CSV paths point into the copy
        for k in r:
            if isinstance(r[k], str):
                r[k] = r[k].replace(str(tiny_libri2mix), str(root))
    with pytest.raises(AudioError) as err:
        ds[1]
    assert ds.rows[1]["mixture_ID"] + ".wav" in str(err.value)
    assert "row 3" in str(err.value) and "source_2_path" in str(err.value)


def test_wrong_sample_rate_and_non_finite_audio_are_refused(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, np.zeros(100, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"x\.wav.*16000 Hz, expected 8000 Hz"):
        read_audio(p, 8000)
    bad = np.zeros(100, dtype=np.float32)
    bad[5] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*NaN or Inf"):
        read_audio(tmp_path / "nan.wav", 8000)


def test_wrong_sample_rate_configured_for_dataset(tiny_libri2mix):
    with pytest.raises(DatasetNotFoundError, match="wav16k"):
        Libri2MixDataset(tiny_libri2mix, "test", sample_rate=16000)


def test_mixture_of_mixtures_never_reads_sources(tiny_libri2mix, monkeypatch):
    base = Libri2MixDataset(tiny_libri2mix, "train-100", "sep_clean", segment=1.0)
    mom = MixtureOfMixtures(base)
    read = base.read

    def guarded(idx, column, *a, **k):
        assert column == "mixture_path", f"MixIT read {column}"
        return read(idx, column, *a, **k)

    monkeypatch.setattr(base, "read", guarded)
    item = mom[0]
    assert item["ref"].shape == (2, 1, 8000) and not item["supervised"]
    torch.testing.assert_close(item["mix"], item["ref"].sum(0))


def test_semisupervised_items_carry_sources(tiny_libri2mix):
    base = Libri2MixDataset(tiny_libri2mix, "train-100", "sep_clean", segment=1.0)
    item = MixtureOfMixtures(base, supervised_share=1.0)[2]
    assert item["supervised"] and item["ref"].shape == (2, 1, 8000)
    torch.testing.assert_close(item["mix"], item["ref"].sum(0))
    with pytest.raises(ValueError, match="supervised_share"):
        MixtureOfMixtures(base, supervised_share=1.5)


def test_eval_sampler_splits_without_padding(tiny_libri2mix):
    ds = Libri2MixDataset(tiny_libri2mix, "test")
    s0, s1 = EvalSampler(ds), EvalSampler(ds)
    s0.num_replicas = s1.num_replicas = 2
    s1.rank = 1
    assert sorted([*s0, *s1]) == list(range(len(ds))) and len(s0) + len(s1) == len(ds) == 5


def test_eval_sampler_refuses_fewer_items_than_processes(tiny_libri2mix, monkeypatch):
    import torch.distributed as dist

    ds = Libri2MixDataset(tiny_libri2mix, "test")  # 5 items
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 8)
    with pytest.raises(ValueError, match=r"5 evaluation item\(s\) \(Libri2MixDataset\) for 8 "
                       r"processes: .*at most 5 device"):  # fmt: skip
        EvalSampler(ds)
    monkeypatch.setattr(dist, "get_world_size", lambda: 5)
    assert len(EvalSampler(ds)) == 1  # one item each: fine


def test_datamodule_batches(tiny_libri2mix):
    dm = Libri2MixDataModule(
        str(tiny_libri2mix),
        train_subset="train-100",
        train_on="mixtures",
        segment=1.0,
        batch_size=4,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["mix"].shape == (4, 1, 8000) and batch["ref"].shape == (4, 2, 1, 8000)
    val = next(iter(dm.val_dataloader()))
    assert val["sources"].shape[:3] == (1, 2, 1)  # whole utterances, true sources


def test_test_split_and_limit_select_the_items(tiny_libri2mix, tmp_path):
    dm = Libri2MixDataModule(str(tiny_libri2mix), test_split="dev", limit_test_items=3)
    dm.setup("test")
    ids = [dm.test_set[i]["id"] for i in range(len(dm.test_set))]
    dev = Libri2MixDataset(tiny_libri2mix, "dev").rows
    assert ids == [r["mixture_ID"] for r in dev[:3]] and dm.describe()["split"] == "dev"
    with pytest.raises(ValueError, match="'test' or 'dev'"):
        Libri2MixDataModule(str(tiny_libri2mix), test_split="train-100")
    # a test CSV with a header and no rows is refused, naming the file
    import shutil

    root = tmp_path / "Libri2Mix"
    shutil.copytree(tiny_libri2mix, root)
    csv_path = root / "wav8k/min/metadata/mixture_test_mix_clean.csv"
    csv_path.write_text(csv_path.read_text().splitlines()[0] + "\n")
    empty = Libri2MixDataModule(str(root))
    with pytest.raises(ValueError, match="mixture_test_mix_clean.csv: no test items"):
        empty.setup("test")


def _copy(tiny_libri2mix, tmp_path):
    root = tmp_path / "Libri2Mix"
    shutil.copytree(tiny_libri2mix, root)
    ds = Libri2MixDataset(root, "test")
    for r in ds.rows:  # the CSVs' absolute paths: into the copy
        for k in r:
            if isinstance(r[k], str):
                r[k] = r[k].replace(str(tiny_libri2mix), str(root))
    return root, ds


def test_bad_files_are_named_with_their_csv_row(tiny_libri2mix, tmp_path):
    root, ds = _copy(tiny_libri2mix, tmp_path)
    mix_id = ds.rows[0]["mixture_ID"]
    s1 = root / "wav8k/min/test/s1" / f"{mix_id}.wav"
    n = sf.info(str(s1)).frames
    sf.write(s1, np.zeros((n, 2), dtype=np.float32), 8000, subtype="PCM_16")  # stereo
    with pytest.raises(AudioError, match=rf"{mix_id}\.wav .*row 2, column source_1_path.*mono"):
        ds[0]
    sf.write(s1, np.zeros(n - 100, dtype=np.float32), 8000, subtype="PCM_16")  # shorter
    with pytest.raises(AudioError, match=rf"{n - 100} samples, but the CSV's length .* {n}"):
        ds[0]
    sf.write(s1, np.zeros(0, dtype=np.float32), 8000, subtype="PCM_16")  # no frames at all
    with pytest.raises(AudioError, match=rf"{mix_id}\.wav"):
        ds[0]
    s1.write_bytes(s1.read_bytes()[:30])  # truncated header
    with pytest.raises(AudioError, match=rf"cannot read audio file .*{mix_id}\.wav"):
        ds[0]
    seg = Libri2MixDataset(root, "test", segment=0.5)
    seg.rows = ds.rows
    seg.seg_len = 4000
    with pytest.raises(AudioError, match=rf"{mix_id}\.wav.*row 2"):
        seg[0]


def test_a_length_that_is_not_a_number_names_the_csv_row(tiny_libri2mix, tmp_path):
    root, _ = _copy(tiny_libri2mix, tmp_path)
    csv_path = root / "wav8k/min/metadata/mixture_test_mix_clean.csv"
    rows = list(csv.DictReader(open(csv_path)))
    rows[2]["length"] = "12.5k"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(
        ValueError, match=r"mixture_test_mix_clean.csv: row 4, column length: '12.5k'"
    ):
        Libri2MixDataset(root, "test")


def test_a_rate_the_dataset_does_not_have_says_so(tiny_libri2mix):
    with pytest.raises(DatasetNotFoundError, match="has wav8k but no wav16k: the data are read"):
        Libri2MixDataset(tiny_libri2mix, "test", sample_rate=16000)
