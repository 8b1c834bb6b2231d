"""Bad inputs to the real scripts: each exits non-zero with one `error:` line naming the problem and the fix, and
leaves nothing behind that a later stage would take for a complete output.

The cases run as subprocesses, a few at a time (most stop before any model is loaded; the time goes to imports).
"""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import make_rows, write_jsonl
from helpers_crash import ENV, ROOT, make_data, run_script

from sumtune.config import STAGE_SETTINGS

# Each case is a subprocess (imports alone take seconds): the whole matrix runs under `make test-all`.
pytestmark = pytest.mark.slow

# Files a stage writes last or only when done: none may exist after a failed run.
COMPLETE_MARKERS = ("metrics.json", "predictions.jsonl", "stats.json", "adapter_model.safetensors",
                    "model.safetensors", "manifest.json")
LONG = " ".join(["word"] * 400)


def rows_with(n=6, **change):
    return [{**row, **change} for row in make_rows(n)]


def data_folder(tmp: Path, train=None, test=None, raw_train: bytes | None = None) -> Path:
    folder = make_data(tmp / "data", train=6, validation=2, test=2)
    if train is not None:
        write_jsonl(folder / "train.jsonl", train)
    if test is not None:
        write_jsonl(folder / "test.jsonl", test)
    if raw_train is not None:
        (folder / "train.jsonl").write_bytes(raw_train)
    return folder


def recipe(tmp: Path, text: str, replace: bool = True) -> Path:
    """The demo recipe with `text` appended; with `replace`, the demo's own lines for the same keys are dropped."""
    keys = {line.split(":")[0] for line in text.splitlines() if ":" in line} if replace else set()
    kept = [line for line in Path("recipes/tiny/demo.yaml").read_text().splitlines() if line.split(":")[0] not in keys]
    path = tmp / "recipe.yaml"
    path.write_text("\n".join(kept) + "\n" + text)
    return path


def adapter(tmp: Path, base: str, files: bool = True, name: str = "adapter") -> Path:
    import torch
    from safetensors.torch import save_file

    folder = tmp / name
    folder.mkdir()
    if files:
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
        save_file({"w": torch.zeros(1)}, str(folder / "adapter_model.safetensors"))
    return folder


def prepare(tmp, *args):
    return "prepare_data.py", ["--output_dir", tmp / "out", *args]


def train(tmp, *args):
    return "train.py", ["--output_dir", tmp / "out", "--max_steps", "1", *args]


def evaluate(tmp, *args):
    return "evaluate.py", ["--output_dir", tmp / "out", "--load_in_4bit", "false", *args]


def merge(tmp, *args):
    return "merge.py", ["--output_dir", tmp / "out" / "merged", *args]


def summarize(tmp, *args):
    return "summarize.py", ["--load_in_4bit", "false", *args]


def bare(script, tmp, *args):
    """A script run as a newcomer types it: no recipe, no model (the other builders add the tiny ones)."""
    output = ["--output_dir", tmp / "out"] if "output_dir" in STAGE_SETTINGS[script] else []
    return script, [*output, *args], "bare"


def a_file(tmp: Path) -> Path:
    path = tmp / "taken"
    path.write_text("a file where an output folder should go\n")
    return path


def predictions(tmp: Path, references: list[str]) -> Path:
    return write_jsonl(tmp / "p.jsonl", [{"id": str(i), "prediction": "a summary", "reference": reference}
                                         for i, reference in enumerate(references)])


def binary(tmp: Path, data: bytes) -> Path:
    path = tmp / "article.bin"
    path.write_bytes(data)
    return path


# (id, builder(tmp, model_dir) -> (script, args), words the error line must contain)
CASES = [
    ("missing-text-column", lambda t, m: prepare(t, "--dataset_name", data_folder(
        t, train=[{"id": str(i), "article": "a", "summary": "s"} for i in range(4)])), "--text_column"),
    ("whitespace-articles", lambda t, m: prepare(t, "--dataset_name", data_folder(t, train=rows_with(document=" \n "))),
     "non-empty article"),
    ("empty-summaries", lambda t, m: prepare(t, "--dataset_name", data_folder(t, train=rows_with(summary=""))),
     "non-empty article"),
    ("invalid-json-line", lambda t, m: prepare(t, "--dataset_name", data_folder(
        t, raw_train=b'{"id": "1", "document": "a", "summary": "b"}\n{"id": "2", "document": \n')),
     "train.jsonl:2 is not valid JSON"),
    ("invalid-utf8", lambda t, m: prepare(t, "--dataset_name", data_folder(
        t, raw_train=b'{"id": "1", "document": "caf\xe9", "summary": "b"}\n')), "not valid UTF-8"),
    ("empty-file", lambda t, m: prepare(t, "--dataset_name", data_folder(t, raw_train=b"")), "is empty"),
    ("duplicate-ids", lambda t, m: prepare(t, "--dataset_name", data_folder(t, train=rows_with(id="same"))),
     "duplicate id"),
    ("article-far-longer-than-tiny-max-length", lambda t, m: prepare(
        t, "--dataset_name", data_folder(t, train=rows_with(document=LONG * 20)), "--max_length", "24"),
     "raise --max_length"),
    ("test-summary-longer-than-max-length", lambda t, m: prepare(
        t, "--dataset_name", data_folder(t, test=rows_with(2, summary=LONG))), "raise --max_length"),
    ("unknown-recipe-key", lambda t, m: train(t, "--config", recipe(t, "lora_rnak: 8")), "lora_rnak"),
    ("mistyped-learning-rate", lambda t, m: train(t, "--config", recipe(t, "learning_rate: abc")),
     "`learning_rate` must be a number"),
    ("mistyped-bool", lambda t, m: train(t, "--config", recipe(t, "load_in_4bit: maybe")), "true or false"),
    ("mistyped-choice", lambda t, m: train(t, "--config", recipe(t, "lr_scheduler_type: cosin")), "valid values"),
    ("recipe-not-yaml", lambda t, m: train(t, "--config", recipe(t, "lora_r: [8")), "not valid YAML"),
    ("checkpoint-every-zero-layers", lambda t, m: train(t, "--checkpoint_every_n_layers", "0"),
     "`checkpoint_every_n_layers` must be at least 1"),
    ("checkpoint-setting-without-checkpointing", lambda t, m: train(t, "--checkpoint_every_n_layers", "2"),
     "only applies with `gradient_checkpointing: true`"),
    ("uncheckpointed-without-checkpointing", lambda t, m: train(t, "--uncheckpointed_layers", "1"),
     "`uncheckpointed_layers` only applies with `gradient_checkpointing: true`"),
    ("uncheckpointed-more-than-layers", lambda t, m: train(t, "--dataset_name", data_folder(t),
                                                           "--gradient_checkpointing", "true",
                                                           "--uncheckpointed_layers", "99"), "at most"),
    ("unknown-cli-flag", lambda t, m: train(t, "--learnin_rate", "1"), "--learnin_rate"),
    ("compiled-twice", lambda t, m: train(t, "--dataset_name", data_folder(t), "--compile_decoder_layers", "true",
                                          "--torch_compile", "true"), "keep one"),
    ("fp16-on-cpu", lambda t, m: train(t, "--dataset_name", data_folder(t), "--fp16", "true"), "fp16: false"),
    ("hub-token-in-recipe", lambda t, m: train(t, "--config", recipe(t, "hub_token: hf_abc")), "HF_TOKEN"),
    ("model-path-missing", lambda t, m: train(t, "--dataset_name", data_folder(t), "--model_name_or_path",
                                              t / "no-such-model"), "does not exist"),
    ("model-without-safetensors", lambda t, m: evaluate(t, "--dataset_name", data_folder(t), "--model_name_or_path",
                                                        _bin_only_model(t, m)), "safetensors"),
    ("conflicting-eval-modes", lambda t, m: evaluate(t, "--baseline", "lead", "--predictions_file", "p.jsonl"),
     "not both"),
    ("incomplete-prepared-data", lambda t, m: evaluate(t, "--baseline", "lead", "--dataset_name", _half_prepared(t)),
     "incomplete prepared dataset"),
    ("predictions-missing-field", lambda t, m: evaluate(t, "--predictions_file", write_jsonl(
        t / "p.jsonl", [{"id": "1", "prediction": "x"}])), "no string field reference"),
    ("merge-adapter-without-adapter", lambda t, m: evaluate(t, "--dataset_name", data_folder(t), "--merge_adapter",
                                                            "true"), "needs --adapter_path"),
    ("merge-adapter-into-4bit", lambda t, m: evaluate(t, "--dataset_name", data_folder(t), "--merge_adapter", "true",
                                                      "--adapter_path", adapter(t, str(m)), "--load_in_4bit", "true"),
     "--dequantize_4bit_base true"),
    ("merge-adapter-into-8bit", lambda t, m: evaluate(t, "--dataset_name", data_folder(t), "--merge_adapter", "true",
                                                      "--adapter_path", adapter(t, str(m)), "--load_in_8bit", "true"),
     "8-bit base"),
    ("adapter-without-files", lambda t, m: merge(t, "--adapter_path", adapter(t, str(m), files=False)),
     "no adapter_config.json"),
    ("adapter-for-another-base", lambda t, m: merge(t, "--adapter_path", adapter(t, "microsoft/phi-2")),
     "was trained on 'microsoft/phi-2'"),
    ("summary-is-a-list", lambda t, m: prepare(t, "--dataset_name", data_folder(
        t, train=[{**r, "summary": [r["summary"]]} for r in make_rows(6)])), "`summary` is a list, not a string"),
    ("one-summary-is-a-list", lambda t, m: prepare(t, "--dataset_name", data_folder(
        t, train=[{**r, "summary": [r["summary"]]} if i == 3 else r for i, r in enumerate(make_rows(6))])),
     "row 4 (id 'row-3'): `summary` is a list"),
    ("article-is-a-number", lambda t, m: prepare(t, "--dataset_name", data_folder(t, train=rows_with(document=7))),
     "`document` is a number, not a string"),
    ("prepare-output-dir-is-a-file", lambda t, m: prepare(t, "--dataset_name", data_folder(t), "--output_dir",
                                                          a_file(t)), "is an existing file, not a folder"),
    ("evaluate-output-dir-is-a-file", lambda t, m: evaluate(t, "--baseline", "lead", "--dataset_name",
                                                            data_folder(t), "--output_dir", a_file(t) / "lead"),
     "cannot be made: "),
    ("single-file-of-five-rows", lambda t, m: prepare(t, "--dataset_name", write_jsonl(t / "five.jsonl",
                                                                                       make_rows(5))),
     "has 5 usable rows; carving train, validation and test splits from one file needs at least 11"),
    ("train-without-recipe-or-model", lambda t, m: bare("train.py", t), "No model given: pass a recipe"),
    ("evaluate-without-recipe-or-model", lambda t, m: bare("evaluate.py", t), "--model_name_or_path, or --baseline"),
    ("summarize-without-recipe-or-model", lambda t, m: bare("summarize.py", t), "No model given: pass a recipe"),
    ("summarize-binary-file", lambda t, m: summarize(t, "--input_file", binary(t, b"\x89PNG\r\n\x1a\n\xff\x00")),
     "is not UTF-8 text"),
    ("summarize-nul-bytes", lambda t, m: summarize(t, "--input_file", binary(t, b"text\x00\x00\x00")),
     "is a binary file"),
    ("all-references-empty", lambda t, m: evaluate(t, "--predictions_file", predictions(t, ["", " ", ""])),
     "Every reference in"),
    ("some-references-empty", lambda t, m: evaluate(t, "--predictions_file", predictions(
        t, ["A cat was rescued.", "", "Roads flooded.", " "])), "2 of 4 rows"),
    ("recipe-key-given-twice", lambda t, m: train(t, "--config", recipe(t, "lora_r: 8", replace=False)),
     "sets `lora_r` twice"),
    ("lora-targets-the-model-lacks", lambda t, m: train(t, "--dataset_name", data_folder(t), "--lora_target_modules",
                                                        "qproj", "vproj"),
     "LoRA target module(s) ['qproj', 'vproj'] match no layer"),
]


def _bin_only_model(tmp: Path, model_dir: Path) -> Path:
    folder = tmp / "bin-model"
    folder.mkdir()
    (folder / "config.json").write_text((model_dir / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    return folder


def _half_prepared(tmp: Path) -> Path:
    folder = tmp / "prepared"
    folder.mkdir()
    (folder / "dataset_dict.json").write_text('{"splits": ["test"]}')
    return folder


@pytest.fixture(scope="module")
def results(tiny_model_dir, tmp_path_factory, in_repo_module):
    def run(case):
        name, build, _ = case
        tmp = tmp_path_factory.mktemp(name)
        script, args, *how = build(tmp, tiny_model_dir)
        if how:
            result = subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                                    text=True, timeout=240, stdin=subprocess.DEVNULL)
        else:
            result = run_script(script, tiny_model_dir, *args, timeout=240)
        return name, (result, tmp)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, CASES))


@pytest.fixture(scope="module")
def in_repo_module():
    from conftest import ROOT

    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)
    yield ROOT
    mp.undo()


def test_matrix_is_large_enough():
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "expected"), [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_with_one_clear_line(results, name, expected):
    result, tmp = results[name]
    assert result.returncode not in (0, None), result.stdout[-1000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert expected in errors[0], errors[0]
    left = [p for p in (tmp / "out").rglob("*") if p.name in COMPLETE_MARKERS] if (tmp / "out").exists() else []
    assert not left, f"complete-looking output left behind: {left}"
