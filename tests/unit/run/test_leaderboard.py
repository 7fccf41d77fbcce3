"""The leaderboard is generated from results files: check it against two fixture files."""

import csv
import json
import shutil

from tests.conftest import FIXTURES
from zoo.run.leaderboard import collect, render, write_leaderboard


def test_collect_skips_archived_runs():
    rows = collect(FIXTURES / "results")
    assert sorted(r["recipe"] for r in rows) == ["libri2mix_mixit", "libri2mix_pit"]


def test_tables_keep_mini_apart_and_cite_published_numbers():
    md = render(collect(FIXTURES / "results"), plot_name=None)
    real = md.index("## Libri2Mix sep_clean\n")
    mini = md.index("## Libri2Mix sep_clean — built-in mini data")
    assert real < mini  # real-data tables first
    real_table = md[real:mini]
    assert (
        "| 1 | libri2mix_pit | Conv-TasNet | PITLoss | blind | 14.20 | 14.10 | 5.05 M | 0.050 "
        "| 3000 |" in real_table
    )
    assert "14.70 SI-SDRi (Asteroid egs/librimix/ConvTasNet/README.md" in real_table  # cited
    mini_table = md[mini:]
    assert "| 1 | libri2mix_mixit | TDCN++ | MixITLoss | blind | 1.60 |" in mini_table
    assert "Asteroid" not in mini_table.split("How to read it")[0]  # no published figure there
    assert "99" not in md


def test_rows_are_sorted_by_the_main_metric(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURES / "results", root)
    better = json.loads((root / "libri2mix_pit" / "metrics.json").read_text())
    better.update(recipe="better", si_sdri=15.5)
    (root / "better").mkdir()
    (root / "better" / "metrics.json").write_text(json.dumps(better))
    md = render(collect(root), plot_name=None)
    assert md.index("| 1 | better |") < md.index("| 2 | libri2mix_pit |")


def test_write_leaderboard_with_plot_and_csv(tmp_path):
    out = write_leaderboard(FIXTURES / "results", tmp_path / "LEADERBOARD.md")
    assert (tmp_path / "leaderboard.png").stat().st_size > 1000
    assert "![quality against real-time factor](leaderboard.png)" in out.read_text()
    rows = list(csv.DictReader(open(tmp_path / "leaderboard.csv")))
    assert {r["recipe"] for r in rows} == {"libri2mix_pit", "libri2mix_mixit"}


def test_bad_results_files_are_skipped_naming_the_file_and_key(tmp_path, capsys):
    import shutil

    from zoo.cli import main

    shutil.copytree(FIXTURES / "results", tmp_path / "results")
    good = len(collect(tmp_path / "results", quiet=True))
    bad = {  # invalid JSON, an old or hand-edited schema
        "x": "{nope",
        "y": json.dumps({"dataset": "Libri2Mix", "si_sdri": "3.1"}),
        "z": json.dumps({"recipe": "r", "si_sdri": 1.0}),
        "w": json.dumps({"dataset": "MUSDB18", "targets": {"vocals": {"sdr": "high"}}}),
        "v": json.dumps([1, 2]),
    }
    for name, text in bad.items():
        (tmp_path / "results" / name).mkdir()
        (tmp_path / "results" / name / "metrics.json").write_text(text)
    out = tmp_path / "LEADERBOARD.md"
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "-o", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad) and all(line.startswith("[zoo] skipped ") for line in err)
    assert "v/metrics.json: holds a list" in err[0] and "'targets.vocals.sdr'" in err[1]
    assert "x/metrics.json: not valid JSON" in err[2] and "'si_sdri' is a str" in err[3]
    assert "z/metrics.json: 'dataset' is missing" in err[4]
    assert len(collect(tmp_path / "results", quiet=True)) == good  # the rest are built
    assert "libri2mix_pit" in out.read_text()


def test_music_tables_rank_by_sdr_with_per_target_columns(tmp_path):
    root = tmp_path / "results"
    base = {
        "dataset": "MUSDB18-HQ",
        "task": "vocals+drums+bass+other",
        "mini": True,
        "loss": "FixedOrderLoss",
        "params": 1_000_000,
        "n_items": 4,
        "si_sdr": 1.0,
    }
    rows = {
        "musdb18_umx": dict(
            architecture="Open-Unmix",
            sdr=6.0,
            targets={
                "vocals": {"sdr": 4.5},
                "drums": {"sdr": 5.5},
                "bass": {"sdr": 5.5},
                "other": {"sdr": 8.5},
            },
        ),
        "musdb18_unet": dict(
            architecture="U-Net",
            sdr=7.25,
            targets={
                "other": {"sdr": 9.0},
                "vocals": {"sdr": 7.0},
                "drums": {"sdr": 6.0},
                "bass": {"sdr": 7.0},
            },
        ),
        "musdb18-oracle-irm": dict(
            model="oracle-irm",
            oracle=True,
            sdr=12.0,
            targets={
                "vocals": {"sdr": 11.0},
                "drums": {"sdr": 12.0},
                "bass": {"sdr": 13.0},
                "other": {"sdr": 12.0},
            },
        ),
    }
    for name, extra in rows.items():
        (root / name).mkdir(parents=True)
        (root / name / "metrics.json").write_text(json.dumps({**base, "recipe": name, **extra}))
    md = render(collect(root), plot_name=None)
    table = md[md.index("## MUSDB18-HQ vocals+drums+bass+other") :]
    assert "| SDR (dB) | vocals SDR | drums SDR | bass SDR | other SDR | SI-SDR (dB) |" in table
    assert (
        "| 1 | musdb18_unet | U-Net | FixedOrderLoss | blind | 7.25 | 7.00 | 6.00 | 7.00 | 9.00 |"
        in table
    )
    assert (
        "| 2 | musdb18_umx | Open-Unmix | FixedOrderLoss | blind | 6.00 | 4.50 | 5.50 | 5.50 "
        "| 8.50 |" in table
    )
    assert "| ref | oracle-irm |  |  | oracle | 12.00 | 11.00 | 12.00 | 13.00 | 12.00 |" in table


def test_reference_protocols_are_rows_of_their_own(tmp_path):
    """A model scored with its clips ordered by the references shows that score as a labelled
    reference row, never in its ranked row; models that read the sources are reference rows."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURES / "results", root)
    base = json.loads((root / "libri2mix_mixit" / "metrics.json").read_text())
    slots = {
        **base,
        "recipe": "slots",
        "architecture": "AudioSlots",
        "si_sdri": 1.1,
        "protocol": "blind",
        "oracle_stitch_si_sdri": 2.6,
        "oracle_stitch_si_sdr": 2.7,
        "test_protocol": {"chunk_seconds": 0.5, "mask": "wiener", "stitch": "carried"},
    }
    ae = {**base, "recipe": "slots_ae", "architecture": "AudioSlots autoencoder (oracle)",
          "si_sdri": 9.0, "protocol": "oracle"}  # fmt: skip
    for m in (slots, ae):
        (root / m["recipe"]).mkdir()
        (root / m["recipe"] / "metrics.json").write_text(json.dumps(m))
    md = render(collect(root), plot_name=None)
    assert "| 2 | slots | AudioSlots | MixITLoss | blind, 0.5 s clips, wiener masks | 1.10 |" in md
    assert (
        "| ref | slots | AudioSlots | MixITLoss | oracle stitch, 0.5 s clips, wiener masks | 2.60 |"
        in md
    )
    assert "| ref | slots_ae | AudioSlots autoencoder (oracle) | MixITLoss | oracle | 9.00 |" in md
    assert "| 2 | slots_ae" not in md and "| 1 | slots_ae" not in md
