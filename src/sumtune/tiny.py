"""A tiny Phi-architecture model and an offline byte-level BPE tokenizer, for the CPU demo and the tests.

Nothing is downloaded: the tokenizer is trained on the given texts (GPT-2-style byte-level BPE, like Phi-2's) and
the model is `PhiForCausalLM` with random weights built from a small `PhiConfig`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GenerationConfig, PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS,
                                   model_max_length=2048)


def tiny_phi_config(vocab_size: int, hidden_size: int = 128, num_hidden_layers: int = 2, **overrides) -> PhiConfig:
    values = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=4, max_position_embeddings=2048,
        partial_rotary_factor=0.5, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False,
    )
    return PhiConfig(**(values | overrides))


def build_tiny_model(output_dir: str | Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 2000,
                     **config_overrides) -> Path:
    """Save a random-weight tiny Phi model and its tokenizer as a local model folder (safetensors)."""
    output_dir = Path(output_dir)
    tokenizer = build_tokenizer(texts, vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = tiny_phi_config(len(tokenizer), bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
                             **config_overrides)
    torch.manual_seed(seed)
    model = PhiForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=eos_id)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return output_dir
