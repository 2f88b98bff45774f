VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint setup train-fusion train-image train-defaults evaluate bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# Localhost only by default; to serve a network, put a TLS reverse proxy in front (README, "Serving on a
# network") rather than `make run ADDRESS=0.0.0.0`.
ADDRESS ?= 127.0.0.1
PORT ?= 8501

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

# pyflakes + pycodestyle through ruff (settings in pyproject.toml); ruff is installed on first use.
lint: $(STAMP)
	$(PY) -m pip install --quiet ruff==0.17.6
	$(VENV)/bin/ruff check .

# The committed default models: the whole network fine-tuned (about 50 minutes each on 2 CPU
# cores; run one at a time). Re-running a target resumes from runs/<name>/checkpoint.pt.
THREADS ?= 2
TRAIN_COMMON := --freeze-stages 0 --epochs 12 --optimizer adamw --lr 5e-4 --weight-decay 0.01 \
	--class-weights sqrt-inverse --label-smoothing 0.1 --patience 12 --resume --threads $(THREADS)

train-fusion: $(STAMP)
	$(PY) -m core.model.train --name fusion-lite0 $(TRAIN_COMMON)

train-image: $(STAMP)
	$(PY) -m core.model.train --name image-lite0 --no-metadata $(TRAIN_COMMON)

# Both default models, one after the other (the long run: start it with nohup).
train-defaults: train-fusion train-image

evaluate: $(STAMP)
	$(PY) -m core.model.evaluate --bundle weights/fusion-lite0
	$(PY) -m core.model.evaluate --bundle weights/image-lite0

# -- explanations, performance aggregates and the papers' comparison ---------------------------
.PHONY: card explain compare compare-defaults compare-trainings calibrate

# Store test metrics plus the Model performance page's aggregates (curves, operating points,
# calibration bins, subgroups) in each committed bundle's card.
card: $(STAMP)
	$(PY) -m core.model.evaluate --bundle weights/fusion-lite0 --write-card
	$(PY) -m core.model.evaluate --bundle weights/image-lite0 --write-card

# Permutation importance and metadata SHAP on the validation split -> weights/<name>/explanations.json.
explain: $(STAMP)
	$(PY) -m core.explain.importance --bundle weights/fusion-lite0 --threads $(THREADS)
	$(PY) -m core.explain.importance --bundle weights/image-lite0 --threads $(THREADS)

# The papers' model comparison -> results/comparison.json (+ .csv). Resumable: re-run to continue.
compare: $(STAMP)
	$(PY) bench/compare_models.py --threads $(THREADS)

# Re-evaluate the comparison rows that reuse the committed bundles (rows 3 and 4), after retraining.
compare-defaults: $(STAMP)
	$(PY) bench/compare_models.py --threads $(THREADS) --rows lite0-image lite0-fusion --cv-models --re-evaluate

# Calibration, decision rule and referral thresholds refitted on validation (training runs this itself).
calibrate: $(STAMP)
	$(PY) -m core.model.calibrate --bundle weights/fusion-lite0
	$(PY) -m core.model.calibrate --bundle weights/image-lite0

# Out-of-distribution statistics (PCA + Mahalanobis on the training split) -> the card's "ood".
ood: $(STAMP)
	$(PY) -m core.clinic.ood --bundle weights/fusion-lite0

# Everything the pages read from the bundles, after (re)training: run in this order, since each
# step rewrites part of the model card.
bundle-extras: card ood gate explain

# The comparison without the cross-validation (what fits one 3-hour session on 2 cores): the
# two paper-CNN rows train side by side on one thread each, then every row is evaluated in one
# run on $(THREADS) threads, so every row's inference time comes from the same run (row 5 is
# trained only if row 2 shows promise). Resumable.
compare-budget: $(STAMP)
	mkdir -p runs
	$(PY) bench/compare_models.py --threads 1 --train-only --rows papercnn-fusion > runs/compare-papercnn.log 2>&1 & \
	$(PY) bench/compare_models.py --threads 1 --train-only --rows papercnn-heatmap-fusion > runs/compare-heatmap.log 2>&1; \
	wait
	$(PY) bench/compare_models.py --threads $(THREADS) --cv-models --re-evaluate

# The comparison with 3 trainings (seeds 42, 43, 44) of every row, so that differences between rows can
# be claimed (a claim needs 3 trainings of each): about 10 CPU-hours on 2 cores beyond `compare-budget`
# (rows 1-2: two more trainings of about 35 minutes each; rows 3-5: two or three of about 65). Resumable.
compare-trainings: $(STAMP)
	$(PY) bench/compare_models.py --threads $(THREADS) --trainings 3 --cv-models

# -- validation on a clinic's own labelled set (core.validation.validate) ------------------------
.PHONY: validate bench-validate

# make validate IMAGES=folder LABELS=labels.csv [MAP=label_map.csv] [OUT=folder] [BUNDLE=weights/...]
validate: $(STAMP)
	$(PY) -m core.validation.validate --images "$(IMAGES)" --labels "$(LABELS)" --bundle "$(or $(BUNDLE),weights/fusion-lite0)" \
		$(if $(MAP),--label-map "$(MAP)") $(if $(OUT),--out "$(OUT)")

# Time core.validation.validate on 1,000 HAM10000 test-split images (target: under 2 minutes on 2 cores).
bench-validate: $(STAMP)
	$(PY) bench/bench_validate.py --threads $(THREADS)

# The input gate (core.clinic.gate): dermoscopy vs generated non-dermoscopy images, a logistic regression on
# each bundle's own features, thresholded on the validation split -> the card's "gate". After `ood`.
# `python bench/bench_gate.py --bundle weights/<name>` prints its flag rates.
.PHONY: gate
gate: $(STAMP)
	$(PY) -m core.clinic.gate --bundle weights/fusion-lite0 --threads $(THREADS)
	$(PY) -m core.clinic.gate --bundle weights/image-lite0 --threads $(THREADS)
