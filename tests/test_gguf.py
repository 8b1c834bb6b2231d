"""export_gguf.py / `make gguf`: refusals without the toolchain (fast), and in the slow tier the real thing: the SmolLM2
demo fine-tune exported by llama.cpp's converter and quantizer, then summarizing in llama.cpp (llama-cpp-python) with
the prompt and stop token from the files' metadata, compared with the project's own summaries of the merged model."""

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from sumtune import gguf_export
from sumtune.config import ConfigError, RunError
from sumtune.gguf_export import export_gguf, file_name
from sumtune.layout import MANIFEST_FILE, METRICS_FILE
from sumtune.manifest import read_manifest

TEMPLATE = ROOT / "prompts" / "chat_template.jinja"
INSTRUCTION = ROOT / "prompts" / "instruction.txt"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def merged_folder(source: Path, target: Path) -> Path:
    """A model folder laid out as merge.py leaves one: weights, tokenizer, the prompt files."""
    shutil.copytree(source, target)
    shutil.copy(TEMPLATE, target / "chat_template.jinja")
    shutil.copy(INSTRUCTION, target / "instruction.txt")
    return target


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "export_gguf.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=600)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


# --- fast: refusals, before any toolchain is needed ----------------------------------------------------------------

def test_a_missing_merged_folder_is_one_error_line_naming_the_stage(tmp_path):
    done = run_script("--run_dir", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(error_lines(done)) == 1 and "make merge" in error_lines(done)[0], done.stderr
    assert not (tmp_path / "run" / "gguf").exists()


def script_error(monkeypatch, capsys, *args: str) -> str:
    """export_gguf.py run in this process as `python export_gguf.py ARGS` runs it: its one `error:` line (exit 2)."""
    from sumtune.cli import run

    monkeypatch.setattr(sys, "argv", ["export_gguf.py", *args])
    with pytest.raises(SystemExit) as exited:
        run(runpy.run_path(str(ROOT / "export_gguf.py"))["main"])
    assert exited.value.code == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    return line


def test_an_architecture_it_does_not_export_is_one_error_line(tmp_path, monkeypatch, capsys):
    merged = tmp_path / "run" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    (merged / "model.safetensors").write_bytes(b"x")
    line = script_error(monkeypatch, capsys, "--run_dir", str(tmp_path / "run"))
    assert "GPT2LMHeadModel" in line and "Phi" in line and "Gemma 3" in line
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["merged"]


@pytest.mark.parametrize("args, problem", [(["--run_dir", "r", "--types", "q5_0"], "q5_0"),
                                           (["--merged_dir", "m"], "--merged_dir needs --output_dir"),
                                           (["--run_dir", "r", "--merged_dir", "m"], "not allowed with")])
def test_bad_flags_are_one_error_line(monkeypatch, capsys, args, problem):
    assert problem in script_error(monkeypatch, capsys, *args)


class FakeLlamaCpp:
    """Stands in for llama.cpp's converter and quantizer: writes a file per type and counts the calls."""

    def __init__(self, monkeypatch, tokenizer, fail: bool = False):
        self.calls = []
        monkeypatch.setattr(gguf_export, "toolchain", lambda: self)
        monkeypatch.setattr(gguf_export, "convert", self.convert)
        monkeypatch.setattr(gguf_export, "quantize", lambda _, src, out, t: self.write(out, t))
        monkeypatch.setattr(gguf_export, "gguf_metadata", lambda path: {
            "chat_template": tokenizer.chat_template, "eos_token_id": tokenizer.eos_token_id})
        self.fail = fail

    def write(self, path: Path, gguf_type: str) -> None:
        self.calls.append(gguf_type)
        path.write_bytes(b"GGUF" + gguf_type.encode())

    def convert(self, merged, outfile):
        self.write(outfile, "f16")
        if self.fail:
            raise RunError("llama.cpp's converter could not convert it")


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir):
    return merged_folder(tiny_model_dir, tmp_path / "run" / "merged").parent


def test_the_same_settings_reuse_the_export_and_other_settings_are_refused(tiny_run, tiny_tokenizer, monkeypatch):
    fake = FakeLlamaCpp(monkeypatch, tiny_tokenizer)
    out = export_gguf(tiny_run / "merged", tiny_run / "gguf", ["f16", "q8_0"])
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([file_name("run", "f16"), file_name("run", "q8_0"), "Modelfile", "README.md",
                            "manifest.json"])
    assert fake.calls == ["f16", "q8_0"]
    export_gguf(tiny_run / "merged", tiny_run / "gguf", ["q8_0", "f16"])  # the same types in another order
    assert fake.calls == ["f16", "q8_0"], "a finished export with the same settings is reused"
    with pytest.raises(ConfigError, match=r"already holds a GGUF export made with other settings \(types: "
                                          r"\['f16', 'q8_0'\] -> \['f16', 'q8_0', 'q4_k_m'\]\).*overwrite"):
        export_gguf(tiny_run / "merged", tiny_run / "gguf", ["f16", "q8_0", "q4_k_m"])
    assert sorted(p.name for p in out.iterdir()) == files
    export_gguf(tiny_run / "merged", tiny_run / "gguf", ["q8_0"], overwrite=True)
    assert not (out / file_name("run", "f16")).exists(), "f16 is only the quantizer's source when not asked for"
    assert read_manifest(out)["settings"]["types"] == ["q8_0"]


def test_a_failed_conversion_leaves_nothing(tiny_run, tiny_tokenizer, monkeypatch):
    FakeLlamaCpp(monkeypatch, tiny_tokenizer, fail=True)
    with pytest.raises(RunError):
        export_gguf(tiny_run / "merged", tiny_run / "gguf")
    assert sorted(p.name for p in tiny_run.iterdir()) == ["merged"]


def test_metadata_other_than_the_training_prompt_is_refused(tiny_tokenizer):
    good = {"chat_template": tiny_tokenizer.chat_template, "eos_token_id": tiny_tokenizer.eos_token_id}
    gguf_export.check_metadata(good, tiny_tokenizer, Path("x.gguf"))
    for bad, problem in (({"chat_template": "{{ messages }}"}, "chat template"), ({"eos_token_id": 99999}, "EOS"),
                         ({"add_bos_token": True}, "BOS")):
        with pytest.raises(RunError, match=problem):
            gguf_export.check_metadata(good | bad, tiny_tokenizer, Path("x.gguf"))


def test_the_modelfile_renders_the_training_prompt(tiny_tokenizer):
    """Ollama fills {{ .System }} and {{ .Prompt }}; with the instruction and an article it is the project's prompt."""
    from sumtune.prompts import build_messages, render_prompt

    instruction, article = INSTRUCTION.read_text(), "The council approved a new cycle path."
    text = gguf_export.ollama_modelfile(tiny_tokenizer, instruction, "m.gguf")
    template = text.split('TEMPLATE """')[1].split('"""')[0]
    rendered = template.replace("{{ .System }}", instruction.strip()).replace("{{ .Prompt }}", article)
    assert rendered == render_prompt(tiny_tokenizer, build_messages(instruction, article)["prompt"])
    assert f'PARAMETER stop "{tiny_tokenizer.eos_token}"' in text and "FROM ./m.gguf" in text


def test_publish_uploads_the_gguf_folder_to_its_own_repository(tmp_path):
    from test_publish import scored  # the run with scored cards that publish's own tests use

    from sumtune.modelcard import write_model_card
    from sumtune.publish import plan_uploads

    run = tmp_path / "run"
    for kind in ("adapter", "merged"):
        (run / kind).mkdir(parents=True)
        (run / kind / "weights.safetensors").write_bytes(b"x")
        write_model_card(run / kind, kind, evaluations=[scored(run)])
    assert [u.repo_id for u in plan_uploads(run, "user/sum", None, dry_run=True)] == ["user/sum", "user/sum-adapter"]
    (run / "gguf").mkdir()
    (run / "gguf" / "run-Q8_0.gguf").write_bytes(b"GGUF")
    uploads = plan_uploads(run, "user/sum", None, dry_run=True)
    assert uploads[-1].repo_id == "user/sum-GGUF" and uploads[-1].files == (("run-Q8_0.gguf", 4),)


# --- slow: llama.cpp's converter and quantizer, and llama.cpp running the files -------------------------------------

DEMO_RECIPE = "recipes/smollm2-135m/demo-cpu.yaml"


def llama(path: Path, **kwargs):
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=kwargs.pop("n_ctx", 512), n_threads=os.cpu_count(), verbose=False, **kwargs)


def llama_summaries(path: Path, prompts: list) -> list[str]:
    """Greedy chat completions: llama.cpp applies the template and stops at the stop token from the file's metadata."""
    llm = llama(path)
    out = [llm.create_chat_completion(messages, temperature=0.0, max_tokens=48)["choices"][0]["message"]["content"]
           for messages in prompts]
    llm.close()
    return [text.strip() for text in out]


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """`make demo`'s fine-tune (the demo recipe's data, training and merge, run as the Makefile runs them), the
    project's greedy summaries of its 24 test rows, and `make gguf`'s export of it (f16, q8_0, q4_k_m)."""
    from test_real_weights import build

    build("smollm2-135m")
    run = tmp_path_factory.mktemp("gguf") / "demo"
    made = Path(os.environ.get("SUMTUNE_DEMO_RUN", "/nonexistent"))
    if (made / "eval" / "merged" / METRICS_FILE).is_file() and (made / "merged" / MANIFEST_FILE).is_file():
        # A finished `make demo` (CI runs it first and names it): the same chain, not trained a second time.
        for part in ("data", "merged", "eval/merged"):
            shutil.copytree(made / part, run / part)
    else:
        make = ["make", "--no-print-directory", f"RECIPE={DEMO_RECIPE}",
                "ACCELERATE_CONFIG=accelerate_configs/cpu.yaml", f"OUTPUT_DIR={run}"]
        subprocess.run([*make, "data", "train", "merge"], cwd=ROOT, env=ENV, check=True, capture_output=True)
        subprocess.run([sys.executable, "evaluate.py", "--config", DEMO_RECIPE, "--model_name_or_path",
                        str(run / "merged"), "--load_in_4bit", "false", "--dataset_name", str(run / "data"),
                        "--output_dir", str(run / "eval" / "merged")], cwd=ROOT, env=ENV, check=True,
                       capture_output=True)
    done = run_script("--run_dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def demo_rows(demo_export):
    """The project's summaries, the references, and each row's prompt as evaluate.py built it."""
    from sumtune.data import load_prepared
    from sumtune.layout import PREDICTIONS_FILE
    from sumtune.modeling import load_tokenizer
    from sumtune.prompts import Prompt

    merged = demo_export / "merged"
    rows = [json.loads(line) for line in (demo_export / "eval" / "merged" / PREDICTIONS_FILE).read_text().splitlines()]
    test = load_prepared(demo_export / "data")["test"]
    documents = dict(zip(test["id"], test["document"], strict=True))
    prompt = Prompt.load(load_tokenizer(str(merged), str(merged / "chat_template.jinja")), merged / "instruction.txt")
    prompts = [prompt.for_generation(documents[row["id"]], 320, 48) for row in rows]
    return rows, prompts


@pytest.mark.slow
def test_make_gguf_writes_the_files_with_the_prompt_in_their_metadata(demo_export):
    from sumtune.modeling import load_tokenizer

    out = demo_export / "gguf"
    names = {t: out / file_name("demo", t) for t in ("f16", "q8_0", "q4_k_m")}
    assert all(path.is_file() for path in names.values())
    assert names["q8_0"].stat().st_size < 0.6 * names["f16"].stat().st_size
    tokenizer = load_tokenizer(str(demo_export / "merged"), str(demo_export / "merged" / "chat_template.jinja"))
    metadata = gguf_export.gguf_metadata(names["q8_0"])
    assert metadata["architecture"] == "llama" and metadata["chat_template"] == tokenizer.chat_template
    assert metadata["eos_token_id"] == tokenizer.eos_token_id and tokenizer.eos_token == "<|im_end|>"
    card = (out / "README.md").read_text()
    assert "library_name: gguf" in card and "llama-completion -m demo-Q8_0.gguf --jinja" in card
    assert 'PARAMETER stop "<|im_end|>"' in (out / "Modelfile").read_text()
    again = run_script("--run_dir", str(demo_export))  # the same settings: reused, not converted again
    assert again.returncode == 0 and "reusing it" in again.stderr


@pytest.mark.slow
def test_llama_cpp_f16_summaries_equal_the_projects_and_q8_0_scores_inside_f16s_interval(demo_export, demo_rows):
    from sumtune.metrics import compute_rouge

    rows, prompts = demo_rows
    ours = [row["prediction"].strip() for row in rows]
    references = [row["reference"] for row in rows]
    f16 = llama_summaries(demo_export / "gguf" / file_name("demo", "f16"), prompts)
    differ = [(row["id"], mine, theirs) for row, mine, theirs in zip(rows, ours, f16, strict=True) if mine != theirs]
    print(f"f16 in llama.cpp: {len(rows) - len(differ)} of {len(rows)} summaries equal the project's")
    for row_id, mine, theirs in differ:
        print(f"  {row_id}\n    project:   {mine}\n    llama.cpp: {theirs}")
    assert len(rows) == 24 and len(differ) <= 2

    q8 = llama_summaries(demo_export / "gguf" / file_name("demo", "q8_0"), prompts)
    scores = {name: compute_rouge(texts, references) for name, texts in (("f16", f16), ("q8_0", q8))}
    low, high = scores["f16"]["ci95"]["rouge1"]
    print(f"ROUGE-1: f16 {scores['f16']['rouge1']:.2f} [{low:.2f}, {high:.2f}], q8_0 {scores['q8_0']['rouge1']:.2f}; "
          f"q8_0 equals f16 on {sum(a == b for a, b in zip(f16, q8, strict=True))} of {len(rows)} rows")
    assert all(q8) and low <= scores["q8_0"]["rouge1"] <= high

    q4 = llama_summaries(demo_export / "gguf" / file_name("demo", "q4_k_m"), prompts[:4])
    assert all(q4), "the q4_k_m file runs in llama.cpp"


@pytest.mark.slow
def test_a_tiny_phi_model_exports_and_runs_in_llama_cpp_like_transformers(tmp_path):
    """Phi's tensors mapped right: random weights make every tensor count, so llama.cpp's next-token choices on the
    f16 file agree with transformers'. (The tiny demo model's own trained tokenizer is one llama.cpp's converter does
    not know, so this one borrows SmolLM2's.)"""
    import torch
    from test_real_weights import build
    from transformers import AutoTokenizer, PhiForCausalLM

    from sumtune.prompts import build_messages, render_prompt
    from sumtune.tiny import tiny_phi_config

    smollm2 = build("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = PhiForCausalLM(tiny_phi_config(len(tokenizer), hidden_size=64, bos_token_id=eos, eos_token_id=eos,
                                           pad_token_id=eos))
    folder = tmp_path / "tiny-phi"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copy(TEMPLATE, folder / "chat_template.jinja")
    export_gguf(folder, tmp_path / "gguf", ["f16"])
    path = tmp_path / "gguf" / file_name("tiny-phi", "f16")
    assert gguf_export.gguf_metadata(path)["architecture"] == "phi2"

    tokenizer.chat_template = TEMPLATE.read_text()
    text = render_prompt(tokenizer, build_messages(INSTRUCTION.read_text(), "Heavy rain flooded roads in Kelby.")
                         ["prompt"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    llm = llama(path, logits_all=True)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    ours = torch.tensor(llm.scores[:len(ids)])
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].float()
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    print(f"tiny Phi, {len(ids)} positions: top-1 agreement {agree:.3f}, max |logit diff| "
          f"{float((ours - theirs).abs().max()):.4f}")
    assert agree >= 0.95 and torch.allclose(ours, theirs, atol=0.05)
    llm.reset()
    assert llm.create_completion(ids, max_tokens=8, temperature=0.0)["usage"]["completion_tokens"] > 0
    llm.close()


@pytest.mark.slow
def test_gemma_3_exports_with_its_bos_and_runs_in_llama_cpp_like_transformers(tmp_path):
    """Gemma 3's template writes BOS and its tokenizer adds one: the export keeps the project's prompt (llama.cpp
    tokenizes it to the same ids, BOS once) and llama.cpp's next-token choices on the f16 file are transformers'."""
    import torch
    from test_real_weights import build
    from transformers import AutoModelForCausalLM

    from sumtune.modeling import load_tokenizer
    from sumtune.prompts import build_messages, render_prompt

    # a merged folder as merge.py writes one: the template saved is the one trained with, BOS first (load_tokenizer)
    folder = merged_folder(build("gemma-3-270m"), tmp_path / "gemma-3-270m")
    tokenizer = load_tokenizer(str(folder), str(TEMPLATE))
    (folder / "chat_template.jinja").write_text(tokenizer.chat_template)
    export_gguf(folder, tmp_path / "gguf", ["f16"])
    path = tmp_path / "gguf" / file_name("gemma-3-270m", "f16")
    assert gguf_export.gguf_metadata(path)["architecture"] == "gemma3"

    text = render_prompt(tokenizer, build_messages(INSTRUCTION.read_text(), "Heavy rain flooded roads in Kelby.")
                         ["prompt"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    llm = llama(path, logits_all=True)
    assert ids[0] == tokenizer.bos_token_id and llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    ours = torch.tensor(llm.scores[:len(ids)])
    llm.close()
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(torch.tensor([ids])).logits[0]
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    print(f"Gemma 3 270M, {len(ids)} positions: top-1 agreement {agree:.3f}, max |logit diff| "
          f"{float((ours - theirs).abs().max()):.4f}")
    assert agree >= 0.95
