"""Prompt rendering: one template for training and generation, prompt a token prefix, labels = summary + EOS."""

from pathlib import Path

import pytest
from conftest import ARTICLES, ROOT, SHARED_PHI2
from trl import SFTConfig, SFTTrainer

from sumtune.config import ConfigError
from sumtune.modeling import load_tokenizer
from sumtune.prompts import build_messages, load_chat_template, render_full, render_prompt

TEMPLATE = str(ROOT / "prompts/chat_template.jinja")
INSTRUCTION = (ROOT / "prompts/instruction.txt").read_text()


def tokenizers(tiny_tokenizer):
    yield "tiny", tiny_tokenizer
    if (SHARED_PHI2 / "tokenizer.json").is_file():
        yield "phi-2", load_tokenizer(str(SHARED_PHI2), TEMPLATE)


def test_render_literal_strings(tiny_tokenizer):
    row = build_messages("Summarize.", "Line one.\nLine two.", "A summary.")
    assert render_prompt(tiny_tokenizer, row["prompt"]) == "Summarize.\n\nArticle:\nLine one.\nLine two.\n\nSummary:\n"
    assert render_full(tiny_tokenizer, row["prompt"], row["completion"]) == (
        "Summarize.\n\nArticle:\nLine one.\nLine two.\n\nSummary:\nA summary.<|endoftext|>"
    )


def test_prompt_tokens_are_prefix_of_full(tiny_tokenizer):
    for name, tok in tokenizers(tiny_tokenizer):
        for article, summary in ARTICLES:
            row = build_messages(INSTRUCTION, article, summary)
            prompt_ids = tok(render_prompt(tok, row["prompt"]), add_special_tokens=False)["input_ids"]
            full_ids = tok(render_full(tok, row["prompt"], row["completion"]), add_special_tokens=False)["input_ids"]
            assert full_ids[: len(prompt_ids)] == prompt_ids, name
            assert full_ids[-1] == tok.eos_token_id, name


def test_sft_labels_decode_to_summary_plus_eos(tiny_tokenizer, tmp_path):
    """TRL's own tokenization of our rows: the loss covers exactly the summary and the EOS that ends it."""
    from datasets import Dataset
    from transformers import PhiConfig, PhiForCausalLM

    from sumtune.tiny import tiny_phi_config

    for name, tok in tokenizers(tiny_tokenizer):
        rows = [build_messages(INSTRUCTION, a, s) for a, s in ARTICLES]
        model = PhiForCausalLM(tiny_phi_config(len(tok), hidden_size=32, num_hidden_layers=1))
        args = SFTConfig(output_dir=str(tmp_path / name), max_length=512, bf16=False, report_to="none")
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        for labels, (_, summary) in zip(batch["labels"], ARTICLES, strict=True):
            kept = labels[labels != -100].tolist()
            assert tok.decode(kept) == summary + tok.eos_token, name
        assert isinstance(model.config, PhiConfig)


def test_template_without_eos_is_rejected(tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ConfigError, match="eos_token"):
        load_chat_template(str(bad))


def test_missing_template_file_is_named():
    with pytest.raises(ConfigError, match="not found"):
        load_chat_template(str(Path("/nonexistent/template.jinja")))


def test_bos_opens_the_chat_once_where_the_tokenizer_starts_texts_with_it(tiny_tokenizer, tmp_path):
    """A tokenizer that puts BOS before every text (Gemma's, Llama's) gets it at the start of the rendered chat, so the
    model sees it although the chat is tokenized without special tokens; TRL's input starts with one BOS, the
    labels stay the summary and EOS."""
    from datasets import Dataset
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PhiForCausalLM, PreTrainedTokenizerFast

    from sumtune.tiny import tiny_phi_config

    backend = Tokenizer.from_str(tiny_tokenizer.backend_tokenizer.to_str())  # a copy: the fixture is shared
    backend.add_special_tokens(["<bos>"])
    bos_id = backend.token_to_id("<bos>")
    backend.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos_id)])
    folder = tmp_path / "bos-tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token=tiny_tokenizer.eos_token
                            ).save_pretrained(folder)
    tok = load_tokenizer(str(folder), TEMPLATE)

    row = build_messages(INSTRUCTION, *ARTICLES[0])
    prompt = render_prompt(tok, row["prompt"])
    assert prompt.startswith("<bos>") and render_full(tok, row["prompt"], row["completion"]).startswith("<bos>")
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert prompt_ids[0] == bos_id and prompt_ids.count(bos_id) == 1

    model = PhiForCausalLM(tiny_phi_config(len(tok), hidden_size=32, num_hidden_layers=1))
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_length=512, bf16=False, report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([row]), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["input_ids"][0].tolist()[:len(prompt_ids)] == prompt_ids
    assert tok.decode(batch["labels"][0][batch["labels"][0] != -100].tolist()) == ARTICLES[0][1] + tok.eos_token

    # a template that already opens with BOS (the one saved beside an adapter) gets no second one
    (tmp_path / "saved.jinja").write_text(tok.chat_template)
    again = load_tokenizer(str(folder), str(tmp_path / "saved.jinja"))
    assert again.chat_template == tok.chat_template and render_prompt(again, row["prompt"]) == prompt
