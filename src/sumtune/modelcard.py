"""Model cards for the adapter and the merged model, by the Hugging Face Hub's conventions.

The metadata goes through `huggingface_hub.ModelCardData` (with `EvalResult` for the `model-index`), so the hub and
`ModelCard.load` read it; the body is built from what each folder already holds: run_config.json, the prompt files,
log_history.json and manifest.json. train.py and merge.py write a card without scores; the report step rewrites both
once evaluations exist.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .config import ConfigError
from .layout import CARD_FILE, LOG_HISTORY_FILE, METRICS_FILE, RUN_CONFIG_FILE, STATS_FILE, read_json
from .manifest import read_manifest, write_atomic
from .metrics import SCORES
from .preflight import HUB_ID

logger = logging.getLogger(__name__)

# The recipe keys a reader needs to reproduce or judge the run, in reading order.
RECIPE_KEYS = {
    "data": ("dataset_name", "dataset_config", "max_train_samples"),
    "model": ("model_name_or_path", "dtype", "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant", "lora_r",
              "lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save", "use_rslora", "use_dora"),
    "training": ("max_length", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "global_batch_size", "learning_rate", "lr_scheduler_type",
                 "warmup_steps", "weight_decay", "optim", "fp16", "bf16", "seed"),
}


@dataclass
class Evaluation:
    """One finished evaluate.py output folder, under the name it is shown with."""

    name: str
    folder: Path
    metrics: dict
    split: str
    dataset: str | None


def read_evaluation(name: str, folder: str | Path) -> Evaluation:
    folder = Path(folder)
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{folder / METRICS_FILE} is missing or unreadable: run that evaluation first "
                          f"(`make eval`), or leave `{name}={folder}` out.") from None
    missing = [key for key in (*SCORES, "ci95") if key not in metrics]
    if missing:
        raise ConfigError(f"{folder / METRICS_FILE} has no {', '.join(missing)}: it was not written by evaluate.py; "
                          "re-run that evaluation.")
    settings = (read_manifest(folder) or {}).get("settings") or {}
    return Evaluation(name, folder, metrics, settings.get("eval_split", "test"), settings.get("dataset"))


def format_score(metrics: dict, key: str) -> str:
    """`41.65 [36.20, 47.10]`: the mean and its 95% bootstrap interval."""
    low, high = metrics["ci95"][key]
    return f"{metrics[key]:.2f} [{low:.2f}, {high:.2f}]"


def scores_table(evaluations: list[Evaluation]) -> str:
    """A Markdown table of ROUGE-1/2/L with their 95% intervals, one row per evaluation."""
    lines = ["| system | " + " | ".join(f"{label} [95% CI]" for label in SCORES.values()) + " | rows |",
             "| --- | " + " | ".join("---" for _ in SCORES) + " | ---: |"]
    for ev in evaluations:
        cells = " | ".join(format_score(ev.metrics, key) for key in SCORES)
        lines.append(f"| {ev.name} | {cells} | {ev.metrics.get('num_rows', '')} |")
    return "\n".join(lines)


def _resolved(path) -> Path | None:
    return Path(path).resolve() if path else None


def evaluation_of(model_dir: str | Path, evaluations: list[Evaluation]) -> Evaluation | None:
    """The evaluation that scored this folder's weights: the folder itself (as model or adapter) first, else, for an
    adapter, a merged model made from it (its manifest names the adapter)."""
    model_dir = Path(model_dir).resolve()
    scored = [ev for ev in evaluations if ev.metrics.get("mode") == "model"]
    for ev in scored:
        if model_dir in (_resolved(ev.metrics.get("model")), _resolved(ev.metrics.get("adapter"))):
            return ev
    for ev in scored:
        model = ev.metrics.get("model")
        if model and Path(model).is_dir() and _resolved((read_manifest(model) or {}).get("adapter")) == model_dir:
            return ev
    return None


def hub_id(name: str | None) -> str | None:
    """`name` when it names a hub repository rather than a local path (the hub's metadata only links hub ids)."""
    if not name or Path(name).exists() or name.startswith((".", "/", "~")) or not HUB_ID.match(name):
        return None
    return name


def source_dataset(path: str | None) -> str | None:
    """The dataset a prepared folder was made from (recorded in its stats.json), else `path` itself."""
    if path and (Path(path) / STATS_FILE).is_file():
        try:
            return read_json(Path(path) / STATS_FILE).get("dataset_name") or path
        except (OSError, json.JSONDecodeError):
            return path
    return path


def base_license(base_model: str | None) -> str | None:
    """The base model's license when its card is on this machine (a local folder or the hub cache); never fetched."""
    if not base_model:
        return None
    card = Path(base_model) / CARD_FILE
    if not card.is_file() and hub_id(base_model):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base_model, CARD_FILE)
        card = Path(cached) if isinstance(cached, str) else card
    if not card.is_file():
        return None
    try:
        return ModelCard.load(card).data.license
    except Exception:  # a base card we cannot parse only costs the license line
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def training_figures(history: list[dict]) -> dict:
    """Steps, epochs, final train and eval loss and runtime from the trainer's log history."""
    figures = {}
    losses = [e for e in history if "loss" in e]
    evals = [e for e in history if "eval_loss" in e]
    summary = next((e for e in reversed(history) if "train_runtime" in e), {})
    steps = [e["step"] for e in history if "step" in e]
    if steps:
        figures["optimizer steps"] = max(steps)
    epochs = [e["epoch"] for e in history if "epoch" in e]
    if epochs:
        figures["epochs"] = round(max(epochs), 2)
    if losses:
        figures["final train loss"] = f"{losses[-1]['loss']:.4f} (step {losses[-1].get('step')})"
    if evals:
        figures["final validation loss"] = f"{evals[-1]['eval_loss']:.4f} (step {evals[-1].get('step')})"
    for key in SCORES:
        logged = [e for e in history if f"eval_{key}" in e]
        if logged:
            figures[f"final validation {SCORES[key]} (subset)"] = f"{logged[-1][f'eval_{key}']:.2f}"
    if "train_runtime" in summary:
        figures["training time"] = f"{summary['train_runtime'] / 60:.1f} min"
    return figures


def _fmt(value) -> str:
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _table(rows: dict) -> str:
    return "\n".join(["| | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in rows.items())])


def write_model_card(folder: str | Path, kind: str, published: str | Path | None = None,
                     evaluations: list[Evaluation] = ()) -> Path:
    """Write `folder/README.md` for an adapter (`kind="adapter"`) or a merged model (`kind="merged"`).

    `published` is the path the folder will have once renamed into place (the commands on the card use it);
    `evaluations` are shown in a table, and the one that scored this folder's weights becomes the model-index.
    """
    folder = Path(folder)
    published = Path(published or folder)
    manifest = read_manifest(folder) or {}
    config = read_json(folder / RUN_CONFIG_FILE) or manifest.get("config") or {}
    data_cfg, model_cfg = (config.get(k) or {} for k in ("data", "model"))
    history = read_json(folder / LOG_HISTORY_FILE) or []
    base = manifest.get("base_model") or model_cfg.get("model_name_or_path")
    adapter_manifest = manifest.get("adapter_manifest") or manifest
    dataset = source_dataset(adapter_manifest.get("dataset") or data_cfg.get("dataset_name"))
    name = published.parent.name or published.name
    quantized = bool(model_cfg.get("load_in_4bit"))
    own = evaluation_of(published, list(evaluations)) or evaluation_of(folder, list(evaluations))

    eval_results = None
    if own is not None:
        scored = source_dataset(own.dataset) or dataset or "unknown"
        eval_results = [
            EvalResult(task_type="summarization", task_name="Summarization", dataset_type=scored,
                       dataset_name=scored, dataset_config=data_cfg.get("dataset_config"),
                       dataset_split=own.split, metric_type="rouge", metric_name=label, metric_config=key,
                       metric_value=round(own.metrics[key], 2))
            for key, label in SCORES.items()
        ]
    tags = ["summarization", "sumtune", "trl", "sft", "qlora" if quantized else "lora"]
    data = ModelCardData(
        model_name=name, base_model=hub_id(base), library_name="peft" if kind == "adapter" else "transformers",
        datasets=[hub_id(dataset)] if hub_id(dataset) else None, license=base_license(base), tags=tags,
        pipeline_tag="text-generation", eval_results=eval_results, metrics=["rouge"] if eval_results else None,
    )
    body = _body(kind, name, published, base, dataset, manifest, config, history, folder, list(evaluations), own)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    path = write_atomic(folder / CARD_FILE, str(card))
    logger.info("Model card written to %s", published / CARD_FILE)
    return path


def _body(kind, name, published, base, dataset, manifest, config, history, folder, evaluations, own) -> str:
    data_cfg, model_cfg, train_cfg = (config.get(k) or {} for k in ("data", "model", "training"))
    quantized = bool(model_cfg.get("load_in_4bit"))
    method = (f"QLoRA (the base frozen in 4-bit {model_cfg.get('bnb_4bit_quant_type', 'nf4').upper()}, LoRA "
              f"r={model_cfg.get('lora_r')})" if quantized else f"LoRA (r={model_cfg.get('lora_r')})")
    base_link = f"[{base}](https://huggingface.co/{base})" if hub_id(base) else f"`{base}`"
    data_link = f"[{dataset}](https://huggingface.co/datasets/{dataset})" if hub_id(dataset) else f"`{dataset}`"
    if kind == "adapter":
        what = (f"A LoRA adapter for {base_link} that writes a one-sentence summary of a news article. It was "
                f"trained with {method} by TRL's `SFTTrainer` on {data_link}, with the loss on the summary only.")
    else:
        into = (" (its 4-bit weights, which the adapter was trained against, dequantized)"
                if manifest.get("merged_into") == "dequantized_4bit" else "")
        what = (f"{base_link} with a LoRA adapter merged into its weights{into}, saved in "
                f"`{manifest.get('dtype') or 'the base dtype'}`: a standalone model that writes a one-sentence "
                f"summary of a news article. The adapter (`{manifest.get('adapter')}`) was trained with {method} "
                f"by TRL's `SFTTrainer` on {data_link}, with the loss on the summary only.")
    sections = [f"# {name} ({'LoRA adapter' if kind == 'adapter' else 'merged model'})", what]

    recipe = {f"`{key}`": _fmt(cfg[key]) for group, cfg in (("data", data_cfg), ("model", model_cfg),
                                                             ("training", train_cfg))
              for key in RECIPE_KEYS[group] if cfg.get(key) is not None}
    if recipe:
        sections += ["## Recipe", "The settings that shape the result (all of them are in `run_config.json`; "
                     "versions, data fingerprint and git commit in `manifest.json`).", _table(recipe)]

    instruction = _read_text(folder / "instruction.txt")
    template = _read_text(folder / "chat_template.jinja")
    if instruction is not None:
        sections += ["## Prompt", "Every training row and every generation prompt is the instruction "
                     "(`instruction.txt`) rendered with the chat template (`chat_template.jinja`); the model's "
                     "turn is the summary followed by the end-of-text token.",
                     f"Instruction:\n\n```text\n{instruction.strip()}\n```"]
        if template is not None:
            sections.append(f"Template:\n\n```jinja\n{template.strip()}\n```")

    figures = training_figures(history)
    if figures:
        sections += ["## Training", _table(figures)]

    if evaluations:
        first = own or evaluations[0]
        sections += ["## Evaluation",
                     f"ROUGE F1 x 100 (Porter stemmer) on the `{first.split}` split of {data_link}, "
                     f"{first.metrics.get('num_rows')} rows, with 95% bootstrap intervals"
                     + (f"; this model is `{own.name}`" if own else "")
                     + (" (scored as the merged model made from it)." if own and kind == "adapter"
                        and not own.metrics.get("adapter") else "."),
                     scores_table(list(evaluations))]

    sections += _usage(kind, base, published, model_cfg, data_cfg.get("dataset_name"), train_cfg.get("max_length"))
    return "\n\n".join(sections) + "\n"


def _usage(kind, base, published, model_cfg: dict, data_dir, max_length) -> list[str]:
    """The card's "How to use": summarize.py and evaluate.py with this model and its own prompt files."""
    if kind == "adapter":
        load = f"--model_name_or_path {base} --adapter_path {published}"
        if model_cfg.get("load_in_4bit"):
            load += (f" \\\n    --load_in_4bit true --bnb_4bit_quant_type {model_cfg.get('bnb_4bit_quant_type')} "
                     f"--use_bnb_nested_quant {str(bool(model_cfg.get('use_bnb_nested_quant'))).lower()}")
    else:
        load = f"--model_name_or_path {published} --load_in_4bit false"
    if model_cfg.get("dtype"):
        load += f" --dtype {model_cfg['dtype']}"
    prompt = f"--chat_template_path {published}/chat_template.jinja --instruction_path {published}/instruction.txt"
    return ["## How to use",
            "From a checkout of sumtune (the prompt files are the ones in this folder):",
            f"```bash\npython summarize.py {load} \\\n    {prompt} \\\n    --max_length {max_length} "
            f"--input_file article.txt\n"
            f"python evaluate.py {load} \\\n    {prompt} \\\n    --max_length {max_length} "
            f"--dataset_name {data_dir} --output_dir {published.parent}/eval/{published.name}\n```"]


MODELFILE_NAME = "Modelfile"  # the Ollama Modelfile `make gguf` writes beside the GGUF files


def write_gguf_card(folder: str | Path, merged_dir: str | Path, files: dict[str, str], main: str,
                    has_instruction: bool, published: str | Path | None = None) -> Path:
    """Write `folder/README.md` for a GGUF export (`make gguf`): its files, and how to run them in llama.cpp, Ollama
    and llama-cpp-python with the prompt the model was trained with (the Modelfile beside them)."""
    folder, merged_dir = Path(folder), Path(merged_dir)
    published = Path(published or folder)
    manifest = read_manifest(merged_dir) or {}
    base = manifest.get("base_model")
    name = published.parent.name or published.name
    max_new = 64  # tokens: a one-sentence summary is shorter
    data = ModelCardData(model_name=f"{name} (GGUF)", base_model=hub_id(base), library_name="gguf",
                         license=base_license(base), tags=["gguf", "llama.cpp", "summarization", "sumtune"],
                         pipeline_tag="text-generation")
    sizes = "\n".join(f"| `{file}` | {gguf_type} | {(folder / file).stat().st_size / 1e6:.1f} MB |"
                      for file, gguf_type in files.items())
    system = '-sys "$(cat instruction.txt)" ' if has_instruction else ""
    sections = [
        f"# {name} (GGUF)",
        f"The merged model `{merged_dir}` in GGUF, for llama.cpp, Ollama and LM Studio, converted and quantized by "
        "llama.cpp's own tools (`make gguf` in sumtune). The chat template it was trained with and its end-of-text "
        "token are in each file's metadata, so a runtime that applies the file's template (`--jinja`) gives it the "
        "prompt it was trained on and stops where the summary ends. Its ROUGE scores are on the merged model's card.",
        "| file | type | size |\n| --- | --- | ---: |\n" + sizes,
        "## llama.cpp",
        "Greedy, with the instruction as the system message and the article as the user's (`instruction.txt` is "
        "beside the merged model; `Modelfile` here holds the same text):",
        f"```bash\nllama-completion -m {main} --jinja {system}-p \"$(cat article.txt)\" -st -n {max_new} "
        "--temp 0\n```",
        "## Ollama",
        f"`{MODELFILE_NAME}` holds the same template, instruction and stop token:",
        f"```bash\nollama create {name} -f {MODELFILE_NAME}\nollama run {name} \"$(cat article.txt)\"\n```",
        f"```text\n{(folder / MODELFILE_NAME).read_text(encoding='utf-8').strip()}\n```",
        "## llama-cpp-python",
        f"```python\nfrom llama_cpp import Llama\n\nllm = Llama(\"{main}\", n_ctx=2048)\n"
        "out = llm.create_chat_completion([{\"role\": \"system\", \"content\": open(\"instruction.txt\").read()},\n"
        "                                  {\"role\": \"user\", \"content\": open(\"article.txt\").read()}],\n"
        f"                                 temperature=0, max_tokens={max_new})\n"
        "print(out[\"choices\"][0][\"message\"][\"content\"])\nllm.close()\n```",
    ]
    data_yaml = data.to_yaml()
    path = write_atomic(folder / CARD_FILE, f"---\n{data_yaml}\n---\n\n" + "\n\n".join(sections) + "\n")
    logger.info("Model card written to %s", published / CARD_FILE)
    return path

