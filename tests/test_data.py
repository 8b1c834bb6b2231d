"""Data preparation: cleaning, the token budget, seeded subsampling, local formats, saved splits."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, make_rows, write_jsonl
from helpers_crash import ENV

from sumtune.config import ConfigError, DataArguments
from sumtune.data import (
    MIN_SINGLE_FILE_ROWS,
    describe_split,
    fit_to_budget,
    is_prepared,
    load_prepared,
    prepare_datasets,
    prepare_split,
    save_prepared,
    standardize,
    subsample,
)
from sumtune.prompts import render_full

INSTRUCTION = (ROOT / "prompts/instruction.txt").read_text()


def args_for(path, **overrides):
    return DataArguments(dataset_name=str(path), instruction_path=str(ROOT / "prompts/instruction.txt"), **overrides)


def test_long_article_is_cut_and_summary_kept(tiny_tokenizer):
    article = "\n".join(f"Sentence number {i} about the town council and its plans." for i in range(200))
    summary = "The council has published its plans."
    fitted = fit_to_budget(tiny_tokenizer, INSTRUCTION, article, summary, max_length=128)
    assert fitted["truncated"] and fitted["num_tokens"] <= 128
    assert article.startswith(fitted["document"]) and len(fitted["document"]) < len(article)
    assert fitted["completion"][0]["content"] == summary
    text = render_full(tiny_tokenizer, fitted["prompt"], fitted["completion"])
    assert len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"]) == fitted["num_tokens"]
    assert text.endswith(summary + tiny_tokenizer.eos_token)


def test_short_article_is_untouched(tiny_tokenizer):
    fitted = fit_to_budget(tiny_tokenizer, INSTRUCTION, "A short article.", "Short.", max_length=512)
    assert not fitted["truncated"] and fitted["document"] == "A short article."


def test_summary_that_cannot_fit_is_dropped(tiny_tokenizer):
    assert fit_to_budget(tiny_tokenizer, INSTRUCTION, "Article.", "word " * 400, max_length=64) is None


def test_empty_and_whitespace_rows_are_dropped_and_counted(tmp_path):
    rows = make_rows(5) + [{"id": "e1", "document": "   ", "summary": "x"}, {"id": "e2", "document": "y",
                                                                                "summary": ""},
                           {"id": "e3", "document": None, "summary": "z"}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    from datasets import load_dataset

    ds, counts = standardize(load_dataset("json", data_files=str(path), split="train"), args_for(path), "train")
    assert counts == {"rows": 8, "dropped_empty": 3}
    assert len(ds) == 5 and set(ds.column_names) == {"id", "document", "summary"}


def test_missing_summary_column_names_it_and_the_flag(data_dir):
    with pytest.raises(ConfigError, match=r"'highlights' \(set --summary_column\)"):
        from sumtune.data import load_raw_split

        args = args_for(data_dir, summary_column="highlights")
        standardize(load_raw_split(args, "train"), args, "train")


def test_subsample_is_deterministic_by_seed(data_dir):
    from sumtune.data import load_raw_split

    args = args_for(data_dir)
    ds, _ = standardize(load_raw_split(args, "train"), args, "train")
    assert subsample(ds, 5, seed=1)["id"] == subsample(ds, 5, seed=1)["id"]
    assert subsample(ds, 5, seed=1)["id"] != subsample(ds, 5, seed=2)["id"]
    assert len(subsample(ds, 100, seed=1)) == len(ds)


def test_prepare_save_load_roundtrip(data_dir, tiny_tokenizer, tmp_path):
    dataset, stats = prepare_datasets(args_for(data_dir, max_train_samples=10), tiny_tokenizer, 256, seed=0)
    assert {name: len(ds) for name, ds in dataset.items()} == {"train": 10, "validation": 4, "test": 4}
    assert stats["train"]["rows"] == 16 and stats["train"]["kept"] == 10
    target = tmp_path / "prepared"
    save_prepared(dataset, stats, target)
    assert is_prepared(target) and not (tmp_path / "prepared.tmp").exists()
    assert json.loads((target / "stats.json").read_text())["max_length"] == 256
    assert load_prepared(target)["train"]["id"] == dataset["train"]["id"]


def test_single_file_is_split_by_seed(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "all.jsonl", make_rows(40))
    dataset, _ = prepare_datasets(args_for(path), tiny_tokenizer, 256, seed=0)
    ids = [set(dataset[s]["id"]) for s in ("train", "validation", "test")]
    assert sum(len(i) for i in ids) == 40 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_csv_and_parquet_files_load(tmp_path, suffix):
    import pandas as pd

    from sumtune.data import load_raw_split

    frame = pd.DataFrame(make_rows(3))
    path = tmp_path / f"test.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    assert load_raw_split(args_for(path), "test")["summary"] == frame["summary"].tolist()


def test_incomplete_prepared_folder_is_refused(tmp_path):
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "dataset_dict.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a complete prepared dataset"):
        load_prepared(tmp_path / "prepared")


def test_prepared_data_for_another_max_length_is_refused(data_dir, tiny_tokenizer, tmp_path):
    from sumtune.data import check_prepared_budget

    dataset, stats = prepare_datasets(args_for(data_dir), tiny_tokenizer, 256, seed=0)
    save_prepared(dataset, stats, tmp_path / "prepared")
    check_prepared_budget(tmp_path / "prepared", 256)
    with pytest.raises(ConfigError, match="prepared for max_length=256, not 128"):
        check_prepared_budget(tmp_path / "prepared", 128)


def test_non_string_article_or_summary_names_row_and_type(tmp_path):
    from sumtune.data import load_raw_split

    path = write_jsonl(tmp_path / "train.jsonl", [{**r, "document": ["a", "b"]} for r in make_rows(3)])
    with pytest.raises(ConfigError, match=r"row 1 \(id 'row-0'\): `document` is a list, not a string"):
        standardize(load_raw_split(args_for(path), "train"), args_for(path), "train")


@pytest.mark.parametrize("rows", [MIN_SINGLE_FILE_ROWS - 1, MIN_SINGLE_FILE_ROWS])
def test_single_file_needs_enough_rows_for_three_splits(tmp_path, tiny_tokenizer, rows):
    path = write_jsonl(tmp_path / "all.jsonl", make_rows(rows))
    if rows < MIN_SINGLE_FILE_ROWS:
        with pytest.raises(ConfigError, match=f"has {rows} usable rows; .* needs at least {MIN_SINGLE_FILE_ROWS}"):
            prepare_datasets(args_for(path), tiny_tokenizer, 256, seed=0)
        return
    dataset, _ = prepare_datasets(args_for(path), tiny_tokenizer, 256, seed=0)
    assert {name: len(split) for name, split in dataset.items()} == {"train": rows - 2, "validation": 1, "test": 1}


def test_small_maps_draw_no_progress_bars(data_dir, tiny_tokenizer, tmp_path, capfd):
    dataset, stats = prepare_datasets(args_for(data_dir), tiny_tokenizer, 256, seed=0)
    save_prepared(dataset, stats, tmp_path / "prepared")
    err = capfd.readouterr().err
    assert "Fitting articles" not in err and "Filter" not in err and "Saving the dataset" not in err
    import datasets

    assert datasets.is_progress_bar_enabled()  # switched off for the small work only


def test_split_statistics_read_as_one_line(data_dir, tiny_tokenizer):
    from sumtune.data import load_raw_split

    ds, counts = standardize(load_raw_split(args_for(data_dir), "train"), args_for(data_dir), "train")
    _, stats = prepare_split(ds.select(range(10)), tiny_tokenizer, INSTRUCTION, 256)
    line = describe_split(counts | stats)
    assert line.startswith("10 rows kept of 16 (a seeded sample of 10), 0 articles cut to fit; tokens p50 ")


def prepare(*argv):
    return subprocess.run([sys.executable, "prepare_data.py", "--dataset_num_proc", "1", *map(str, argv)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_prepare_runs_a_bf16_recipe_on_any_machine_and_reuses_its_output(tiny_model_dir, data_dir, tmp_path):
    """The default recipe (bf16) prepares data on a CPU; the same command again reuses the folder, other settings
    are refused naming them, and --overwrite_output_dir true prepares anew."""
    common = ["--config", "recipes/phi-2/qlora.yaml", "--model_name_or_path", tiny_model_dir, "--dataset_name",
              data_dir, "--output_dir", tmp_path / "run"]
    first = prepare(*common)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "Prepared data saved to" in first.stdout and "Traceback" not in first.stderr
    assert first.stdout.count("\n") == 1 and "FutureWarning" not in first.stderr  # one line out, no noise
    stats = (tmp_path / "run" / "data" / "stats.json").read_text()
    again = prepare(*common)
    assert again.returncode == 0 and "(reused)" in again.stdout, again.stderr[-2000:]
    assert "reusing it" in again.stderr and (tmp_path / "run" / "data" / "stats.json").read_text() == stats
    other = prepare(*common, "--max_length", "512")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "error: " + str(tmp_path / "run" / "data") + " already holds prepared data made with other settings " \
           "(max_length: 1024 -> 512)" in other.stderr
    replaced = prepare(*common, "--max_length", "512", "--overwrite_output_dir", "true")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "data" / "stats.json").read_text())["max_length"] == 512


def test_training_reuses_prepared_data_only_with_the_prompt_it_was_prepared_with(data_dir, tiny_model_dir, tmp_path,
                                                                                 in_repo):
    """train.py's own output_dir/data is reused only with the same settings (else an error, or --overwrite_output_dir
    prepares it again); prepare_data.py's folder is refused with another chat template or instruction."""
    from sumtune.config import parse_args
    from sumtune.modeling import load_tokenizer
    from sumtune.training import resolve_data

    other = tmp_path / "instruction.txt"
    other.write_text("Write a one-sentence summary of the article.")
    run = tmp_path / "run"

    def args(dataset, *extra):
        data_args, _, training_args, _ = parse_args(
            ["--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
             str(dataset), "--output_dir", str(run), "--dataset_num_proc", "1", *extra], script="train.py")
        return data_args, training_args

    tokenizer = load_tokenizer(str(tiny_model_dir), "prompts/chat_template.jinja")
    stats = run / "data" / "stats.json"
    resolve_data(*args(data_dir), tokenizer)
    first = json.loads(stats.read_text())["settings"]["prompt_hash"]
    stamp = stats.stat().st_mtime_ns
    resolve_data(*args(data_dir), tokenizer)
    assert stats.stat().st_mtime_ns == stamp, "prepared again with the same settings"
    with pytest.raises(ConfigError, match="holds prepared data made with other settings.*--overwrite_output_dir"):
        resolve_data(*args(data_dir, "--instruction_path", str(other)), tokenizer)
    resolve_data(*args(data_dir, "--instruction_path", str(other)), tokenizer, overwrite=True)
    assert json.loads(stats.read_text())["settings"]["prompt_hash"] != first

    # the folder as prepare_data.py leaves it, given as --dataset_name: now prepared with `other`
    resolve_data(*args(run / "data", "--instruction_path", str(other)), tokenizer)
    with pytest.raises(ConfigError, match="prepared with another prompt"):
        resolve_data(*args(run / "data"), tokenizer)
