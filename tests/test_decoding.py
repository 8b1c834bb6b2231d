"""One decoding-settings object and one prompt for every generator: evaluate.py and summarize.py write the same text
for the same article and settings; MBR decoding; summarize.py over a file of articles."""

import json
import subprocess
import sys

import pytest
from conftest import ARTICLES, ROOT, make_rows, write_jsonl

import sumtune.decoding as decoding_module
from sumtune import summarizing
from sumtune.config import ConfigError, parse_args
from sumtune.decoding import Decoding, mbr_select
from sumtune.evaluation import evaluate
from sumtune.metrics import pairwise_rouge
from sumtune.summarizing import summarize_many, summarize_one

# Off-default decoding through generate(): a banned repeated bigram and a length penalty, two beams.
NON_DEFAULT = ("--num_beams", "2", "--no_repeat_ngram_size", "2", "--length_penalty", "0.5", "--max_new_tokens", "12")


def tiny_args(model_dir, *extra):
    return ["--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(model_dir), "--load_in_4bit", "false",
            "--max_length", "96", *extra]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("options", [(), NON_DEFAULT], ids=["greedy", "beams-no-repeat-length-penalty"])
def test_summarize_and_evaluate_write_the_same_text(tiny_model_dir, tmp_path, in_repo, options):
    # Articles long enough for max_length 96 to cut them: both must cut them the same way.
    rows = [dict(row, document=row["document"] + "\n" + ARTICLES[(i + 1) % 4][0] * 3)
            for i, row in enumerate(make_rows(5, "test"))]
    data = write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    evaluate(*parse_args(tiny_args(tiny_model_dir, "--dataset_name", str(data.parent), "--bootstrap_samples", "10",
                                   "--output_dir", str(tmp_path / "eval"), *options)))
    evaluated = {r["id"]: r["prediction"] for r in read_jsonl(tmp_path / "eval" / "predictions.jsonl")}

    out = tmp_path / "summaries.jsonl"
    counts = summarize_many(*parse_args(tiny_args(tiny_model_dir, "--input_file", str(data), "--output_file", str(out),
                                                  *options), script="summarize.py"))
    summarized = read_jsonl(out)
    assert counts == {"rows": 5, "summaries": 5, "errors": 0}
    assert [r["id"] for r in summarized] == [r["id"] for r in rows]  # input order
    assert {r["id"]: r["summary"] for r in summarized} == evaluated

    article = tmp_path / "one.txt"
    article.write_text(rows[2]["document"])
    one = summarize_one(*parse_args(tiny_args(tiny_model_dir, "--input_file", str(article), *options),
                                    script="summarize.py"))
    assert one == evaluated["test-2"]


def test_decoding_comes_from_the_recipe_and_keys_only_what_changes_the_text(in_repo):
    _, eval_args, _, _ = parse_args(["--config", "recipes/tiny/demo.yaml", "--mbr_candidates", "4",
                                     "--max_new_tokens", "20"])
    decoding = eval_args.decoding
    assert isinstance(decoding, Decoding) and decoding.mbr and decoding.max_new_tokens == 20
    assert decoding.text_settings()["mbr_candidates"] == 4
    plain = Decoding()
    assert plain.text_settings() == {"max_new_tokens": 64, "num_beams": 1}  # the keys outputs had before MBR
    assert plain.generate_options() == {}


def test_mbr_keeps_the_consensus_candidate():
    # The second shares most with the others; the outlier (first) shares nothing.
    candidates = ["a bakery won a national award", "police closed the bridge after a crash",
                  "police closed the bridge", "the bridge was closed after a crash"]
    utility = pairwise_rouge(candidates)
    assert (utility == utility.T).all() and (utility.diagonal() == 100).all()
    assert mbr_select(candidates) == "police closed the bridge after a crash"
    assert mbr_select(["only one"]) == "only one"
    assert mbr_select(["same", "same", "other"]) == "same"
    assert mbr_select(["first", "second"]) == "first"  # a tie keeps the first (the greedy summary)


def test_mbr_with_one_candidate_is_plain_decoding_and_more_is_seeded(tiny_model_dir, tiny_tokenizer, in_repo,
                                                                    monkeypatch):
    from sumtune.modeling import load_model
    from sumtune.prompts import Prompt

    _, _, _, model_args = parse_args(tiny_args(tiny_model_dir))
    model = load_model(model_args)
    prompt = Prompt.load(tiny_tokenizer, "prompts/instruction.txt")
    prompts = [prompt.for_generation(article, 96, 10) for article, _ in ARTICLES]
    greedy = Decoding(max_new_tokens=10).generate(model, tiny_tokenizer, prompts)
    assert Decoding(max_new_tokens=10, mbr_candidates=1).generate(model, tiny_tokenizer, prompts) == greedy

    calls = []
    monkeypatch.setattr(decoding_module, "mbr_select", lambda candidates: calls.append(candidates)
                        or mbr_select(candidates))
    mbr = Decoding(max_new_tokens=10, mbr_candidates=4, generation_batch_size=2)
    first = mbr.generate(model, tiny_tokenizer, prompts)
    assert len(calls) == len(prompts) and all(len(c) == 4 for c in calls)
    assert sorted(c[0] for c in calls) == sorted(greedy)  # the greedy summary is always a candidate
    assert all(text in c for text, c in zip(first, sorted(calls, key=lambda c: greedy.index(c[0])), strict=True))
    assert mbr.generate(model, tiny_tokenizer, prompts) == first  # same seed, same samples


def test_summarize_many_reports_bad_rows_keeps_order_and_resumes(tiny_model_dir, tmp_path, in_repo, caplog,
                                                                monkeypatch):
    rows = [{"id": "a", "document": ARTICLES[0][0]}, {"id": "b", "document": "  "}, {"id": "c"},
            {"id": "d", "document": ARTICLES[1][0]}, {"id": "e", "document": ARTICLES[2][0]}]
    source = write_jsonl(tmp_path / "articles.jsonl", rows)
    out = tmp_path / "out" / "summaries.jsonl"
    args = tiny_args(tiny_model_dir, "--input_file", str(source), "--output_file", str(out), "--max_new_tokens", "8")
    counts = summarize_many(*parse_args(args, script="summarize.py"))
    written = read_jsonl(out)
    assert counts == {"rows": 5, "summaries": 3, "errors": 2}
    assert [r["id"] for r in written] == ["a", "b", "c", "d", "e"]
    assert [r["summary"] is None for r in written] == [False, True, True, False, False]
    assert "error" in written[1] and "b" in caplog.text and "c" in caplog.text
    assert not (out.parent / "summaries.jsonl.partial").exists()

    # A killed run left a partial file holding row d (a text no model would write): the re-run keeps it and
    # generates only the rest. The partial file's key is the one the first run wrote (captured here).
    keys = []
    real_append = summarizing.append_predictions
    monkeypatch.setattr(summarizing, "append_predictions",
                        lambda path, run_key, *a, **k: keys.append(run_key) or real_append(path, run_key, *a, **k))
    out.unlink()
    summarize_many(*parse_args(args, script="summarize.py"))
    out.unlink()
    out.with_name("summaries.jsonl.partial").write_text(
        json.dumps({"run_key": keys[0]}) + "\n" + json.dumps({"index": 3, "id": "d", "prediction": "kept"}) + "\n")
    generated = []
    monkeypatch.setattr(summarizing, "append_predictions",
                        lambda path, run_key, ids, todo, *a, **k: generated.append(len(todo))
                        or real_append(path, run_key, ids, todo, *a, **k))
    summarize_many(*parse_args(args, script="summarize.py"))
    resumed = read_jsonl(out)
    assert generated == [2] and resumed[3]["summary"] == "kept"
    assert [r["summary"] for r in resumed[:3] + resumed[4:]] == [r["summary"] for r in written[:3] + written[4:]]


def test_summarize_many_reuses_a_finished_file_and_refuses_other_settings(tiny_model_dir, tmp_path, in_repo,
                                                                         monkeypatch):
    source = write_jsonl(tmp_path / "articles.jsonl", [{"id": "a", "document": ARTICLES[0][0]}])
    out = tmp_path / "summaries.jsonl"
    args = tiny_args(tiny_model_dir, "--input_file", str(source), "--output_file", str(out), "--max_new_tokens", "6")
    first = summarize_many(*parse_args(args, script="summarize.py"))
    assert (tmp_path / "summaries.jsonl.manifest.json").is_file()  # the settings that made it, beside it
    monkeypatch.setattr(summarizing, "append_predictions", lambda *a, **k: pytest.fail("generated again"))
    assert summarize_many(*parse_args(args, script="summarize.py")) == first
    with pytest.raises(ConfigError, match=r"summaries made with other settings \(max_new_tokens: 6 -> 7\)"):
        summarize_many(*parse_args([*args, "--max_new_tokens", "7"], script="summarize.py"))


def test_summarize_many_reads_csv_and_folders(tiny_model_dir, tmp_path, in_repo):
    csv_file = tmp_path / "articles.csv"
    csv_file.write_text('id,text\nx,"' + ARTICLES[0][0].replace("\n", " ") + '"\ny,"' + ARTICLES[1][0] + '"\n')
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "02-second.txt").write_text(ARTICLES[1][0])
    (folder / "01-first.txt").write_text(ARTICLES[0][0])
    out = tmp_path / "csv.jsonl"
    summarize_many(*parse_args(tiny_args(tiny_model_dir, "--input_file", str(csv_file), "--output_file", str(out),
                                         "--text_column", "text", "--max_new_tokens", "6"), script="summarize.py"))
    assert [r["id"] for r in read_jsonl(out)] == ["x", "y"]
    out = tmp_path / "folder.jsonl"
    summarize_many(*parse_args(tiny_args(tiny_model_dir, "--input_file", str(folder), "--output_file", str(out),
                                         "--max_new_tokens", "6"), script="summarize.py"))
    assert [r["id"] for r in read_jsonl(out)] == ["01-first", "02-second"]


@pytest.mark.parametrize("case", ["no_column", "no_output_file", "exists"])
def test_summarize_many_refuses_bad_input_with_one_line(tiny_model_dir, tmp_path, in_repo, case):
    source = write_jsonl(tmp_path / "articles.jsonl", [{"id": "a", "body": "text"}])
    out = tmp_path / "s.jsonl"
    extra = {"no_column": ["--output_file", str(out)], "no_output_file": [], "exists": ["--output_file", str(out)]}
    if case == "exists":
        source = write_jsonl(tmp_path / "articles.jsonl", [{"id": "a", "document": "text"}])
        out.write_text("{}\n")
    result = subprocess.run([sys.executable, "summarize.py", *tiny_args(tiny_model_dir, "--input_file", str(source)),
                             *extra[case]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    expected = {"no_column": "--text_column", "no_output_file": "--output_file", "exists": "already holds files"}[case]
    assert expected in errors[0]
    if case != "exists":
        assert not out.exists()


def test_mbr_with_beam_search_is_refused(in_repo):
    from sumtune.config import ConfigError

    with pytest.raises(ConfigError, match="num_beams: 1"):
        parse_args(["--config", "recipes/tiny/demo.yaml", "--mbr_candidates", "4", "--num_beams", "2"])
    with pytest.raises(ConfigError, match="always keeps the greedy summary"):
        parse_args(["--config", "recipes/tiny/demo.yaml", "--mbr_candidates", "2"])
