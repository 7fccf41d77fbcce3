# separation-zoo — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
NAME ?= libri2mix_mixit
DATA ?=
GPUS ?= 0
NODES ?= 1
ARGS ?=
RESUME ?=
FRESH ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@echo
	@echo "Layout (layers import only downwards):"
	@echo "  recipes/ conf/     recipes (data) and the LightningCLI fragments they compose"
	@echo "  zoo/cli.py         the zoo command: one sub-command per run-layer function (zoo --help)"
	@echo "  zoo/run/           one build path (build.py), run folders (session.py); train, evaluate and"
	@echo "                     oracles as short scripts over it; results, export, separate, leaderboard"
	@echo "  zoo/system.py      SeparationSystem (LightningModule): backbone + loss + metrics"
	@echo "  zoo/eval/ zoo/hub/ metric kernels (BSS Eval v4, matched SI-SDR); zoo format, registry, converters"
	@echo "  zoo/backbones/ zoo/losses/ zoo/data/   networks (contract: backbones/base.py, capabilities.py), objectives, datamodules"
	@echo "  zoo/dsp.py zoo/matching.py zoo/inference.py   STFT + resampling, assignment solver, chunked separation"

# musdb, stempeg and museval need ffmpeg + ffprobe on PATH even to import: installed from the
# system packages when missing (Debian/Ubuntu apt, as root or through sudo).
ffmpeg: ## Make sure ffmpeg and ffprobe are on PATH (apt-get install ffmpeg when missing)
	@if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if command -v apt-get >/dev/null; then \
		echo "installing ffmpeg (musdb/museval need ffmpeg and ffprobe)"; \
		$$SUDO apt-get install -y -q ffmpeg >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q ffmpeg >/dev/null; }; \
	else \
		echo "ffmpeg/ffprobe missing: install ffmpeg with your package manager" >&2; exit 1; \
	fi

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: ffmpeg $(VENV)/.installed ## Create .venv and install the package with its dev tools (pinned), and ffmpeg

test: install ## Run the default test suite (offline; under 3 minutes on 2 cores)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-slow: install ## Run the system tier: DDP of every recipe, kill/resume, SIGTERM, torchrun, wheel, every recipe's smoke run
	$(VENV)/bin/pytest -q -m system $(PYTEST_ARGS)

test-all: install ## Run every test: default, system and the paper-scale rehearsal (slow)
	$(VENV)/bin/pytest -q -m "slow or system or not (slow or system)" $(PYTEST_ARGS)

lint: install ## ruff
	$(VENV)/bin/ruff check zoo tests benchmarks

recipe: install ## Run a recipe (recipes/NAME.yaml): make recipe NAME=libri2mix_mixit [DATA=/path/Libri2Mix] [GPUS=n] [NODES=m] [RESUME=1 | FRESH=1] [ARGS="--trainer.max_epochs=3"]
	$(VENV)/bin/zoo recipe $(NAME) $(if $(DATA),--data $(DATA)) --gpus $(GPUS) --nodes $(NODES) $(if $(RESUME),--resume) $(if $(FRESH),--fresh) $(ARGS)

recipes: install ## List the recipes
	@$(VENV)/bin/zoo recipes

$(VENV)/.bench-installed: $(VENV)/.installed
	# asteroid 0.7.0 pins torchmetrics<=0.11.4, which the zoo does not use; its own code runs with
	# the pinned torchmetrics, so it goes in without its pins and the rest of its needs come from
	# the `bench` extra.
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev,bench]'
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) asteroid==0.7.0
	touch $@

bench-install: $(VENV)/.bench-installed ## Install the peers (Asteroid, fast_bss_eval) for benchmarks and peer tests

bench: bench-install ## Run the benchmarks against the peers, write BENCHMARKS.md
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
		$(PY) benchmarks/run.py --out BENCHMARKS.md

DRY ?=
gpu-check: install ## One-shot GPU check: every recipe fp32/bf16 on 1 and all GPUs, validation 1 vs N, BSS Eval on the GPU; writes gpu-check/report.{json,md} [DRY=1: CPU, tiny sizes]
	$(PY) benchmarks/gpu_check.py $(if $(DRY),--dry) --out gpu-check

REHEARSE ?=
rehearse: install ## Paper-scale rehearsal of every recipe on generated real-shape data (CPU): train steps, whole-item validation, test, export, zoo.load, zoo separate; writes rehearse/report.json and BENCHMARKS.md's table [REHEARSE="libri2mix_pit musdb18_umx"]
	$(PY) benchmarks/rehearse.py --out rehearse $(if $(REHEARSE),--recipes $(REHEARSE))

bench-data: install ## Data loading throughput of every recipe's paper datamodule (items/s per worker, with/without MUSDB augmentations) against a FLOP-estimated GPU step: workers per GPU; writes BENCHMARKS.md's section [REHEARSE="musdb18_umx"]
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
		$(PY) benchmarks/data_throughput.py $(if $(REHEARSE),--recipes $(REHEARSE))

bench-music: bench-install ## Music separators (Conv-TasNet, Open-Unmix, HTDemucs, BS-RoFormer) on a 30 s stereo 44.1 kHz song beside their reference packages: speed, memory, parameters; writes BENCHMARKS.md's section
	$(PY) benchmarks/music_models.py

bench-stream: install ## Streaming latency and real-time factor of the causal Conv-TasNet (mini and paper configurations) per block size; writes BENCHMARKS.md's section
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
		$(PY) benchmarks/streaming.py

ORACLE_RECIPE ?= libri2mix_pit
oracle: install ## Oracle-mask reference rows (IBM, IRM, Wiener-like, mixture; AudioSlots' 0.5 s clips) through a recipe's test: mini Libri2Mix + MUSDB18, or [DATA= ORACLE_RECIPE=]
	$(if $(DATA),$(VENV)/bin/zoo oracle $(ORACLE_RECIPE) --data $(DATA),$(VENV)/bin/zoo oracle libri2mix_pit && $(VENV)/bin/zoo oracle musdb18_umx --n-fft 4096 --hop 1024 && $(VENV)/bin/zoo oracle libri2mix_audioslots --kinds ibm wiener --chunk-seconds 0.5)

leaderboard: install ## Regenerate LEADERBOARD.md (+ .csv, .png) from results/**/metrics.json
	$(VENV)/bin/zoo leaderboard --results results -o LEADERBOARD.md

clean: ## Remove logs, caches and build files (keeps results/, .venv and data/)
	rm -rf lightning_logs .pytest_cache .ruff_cache build dist

.PHONY: help ffmpeg install test test-slow test-all lint recipe recipes bench bench-install gpu-check rehearse bench-data bench-music bench-stream leaderboard oracle clean
