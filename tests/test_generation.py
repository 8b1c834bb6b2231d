"""Generation: token-budget batches cover every row once; batched left-padded greedy equals one row at a time."""

import pytest
import torch
from conftest import ARTICLES, ROOT
from transformers import AutoModelForCausalLM

from sumtune.decoding import Decoding
from sumtune.generation import iter_token_ids, token_budget_batches
from sumtune.prompts import build_messages

INSTRUCTION = (ROOT / "prompts/instruction.txt").read_text()


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def prompts(n: int) -> list[list[dict]]:
    """Prompts of different lengths, so batches need left padding."""
    return [build_messages(INSTRUCTION, "\n".join(ARTICLES[i % 4][0].splitlines()[: 1 + i % 3]) * (1 + i % 2))["prompt"]
            for i in range(n)]


@pytest.mark.parametrize(("batch_size", "max_batch_tokens"), [(4, None), (64, 200), (3, 10_000), (64, 1)])
def test_token_budget_batches_cover_every_row_once(batch_size, max_batch_tokens):
    lengths = [5, 90, 17, 40, 40, 3, 120, 8, 66, 1]
    batches = list(token_budget_batches(lengths, 10, batch_size, max_batch_tokens))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        if max_batch_tokens is not None and len(batch) > 1:
            assert len(batch) * (max(lengths[i] for i in batch) + 10) <= max_batch_tokens


def test_short_rows_get_larger_batches():
    lengths = [1000] * 4 + [100] * 40
    sizes = [len(b) for b in token_budget_batches(lengths, 24, 512, 4096)]
    assert sizes[0] == 4 and max(sizes) == 4096 // 124


def test_batched_greedy_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    rows = prompts(9)
    single = dict(iter_token_ids(tiny_model, tiny_tokenizer, rows, max_new_tokens=12, batch_size=1))
    batched = dict(iter_token_ids(tiny_model, tiny_tokenizer, rows, max_new_tokens=12, batch_size=8,
                                  max_batch_tokens=4 * 200))
    assert sorted(batched) == list(range(len(rows)))
    assert batched == single
    # and equal to stock generate() on each unpadded prompt
    tokenizer = tiny_tokenizer
    for i, prompt in enumerate(rows):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = tiny_model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        stock = out[0, ids.shape[1]:].tolist()
        eos = tokenizer.eos_token_id
        assert single[i] == (stock[:stock.index(eos)] if eos in stock else stock)


def test_generate_summaries_keeps_input_order(tiny_model, tiny_tokenizer):
    rows = prompts(7)
    batched = Decoding(max_new_tokens=8, generation_batch_size=4, generation_max_batch_tokens=1000).generate(
        tiny_model, tiny_tokenizer, rows)
    one_by_one = [Decoding(max_new_tokens=8).generate(tiny_model, tiny_tokenizer, [row])[0] for row in rows]
    assert batched == one_by_one


def test_decoding_stops_one_step_after_the_last_eos(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """The all-rows-done flag is read two steps late (the host never waits for the step it just queued): one
    decoding forward runs after every row has emitted EOS, and no more."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        model.lm_head.bias[tiny_tokenizer.eos_token_id] = 1e4  # EOS as soon as it is allowed
    forwards = []
    inner = model.model.forward
    monkeypatch.setattr(model.model, "forward", lambda *a, **kw: forwards.append(kw["input_ids"].shape[1]) or
                        inner(*a, **kw))
    out = dict(iter_token_ids(model, tiny_tokenizer, prompts(3), max_new_tokens=10, batch_size=8, min_new_tokens=3))
    assert all(len(ids) == 3 for ids in out.values())
    # prefill (token 0), steps for tokens 1, 2 and 3 (EOS everywhere), one step more
    assert len(forwards) == 5 and forwards[0] > 1 and forwards[1:] == [1] * 4


def test_stops_at_eos(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        model.lm_head.bias[tiny_tokenizer.eos_token_id] = 1e4  # EOS wins whenever it is allowed
    rows = prompts(5)
    assert dict(iter_token_ids(model, tiny_tokenizer, rows, max_new_tokens=10, batch_size=8)) == {
        i: [] for i in range(5)}
    forced = dict(iter_token_ids(model, tiny_tokenizer, rows, max_new_tokens=10, batch_size=8, min_new_tokens=3))
    assert all(len(ids) == 3 and tiny_tokenizer.eos_token_id not in ids for ids in forced.values())
    assert Decoding(max_new_tokens=10).generate(model, tiny_tokenizer, rows) == [""] * 5


def test_prefill_runs_causal_attention_without_a_padding_mask(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """Right-padded prefill needs no padding mask, so SDPA may pick flash attention. Decoding steps run the matmul
    attention over the cache (no SDPA call), or with decode_attention="sdpa" SDPA with a mask."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, is_causal=False, **kwargs):
        calls.append((query.shape[2], attn_mask is None, is_causal))
        return sdpa(query, key, value, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    rows = prompts(4)  # different lengths: the batch is padded
    outputs = {}
    for decode_attention in ("matmul", "sdpa"):
        calls.clear()
        outputs[decode_attention] = dict(iter_token_ids(model, tiny_tokenizer, rows, max_new_tokens=3, batch_size=4,
                                                        min_new_tokens=3, decode_attention=decode_attention))
        prefill = [c for c in calls if c[0] > 1]
        decode = [c for c in calls if c[0] == 1]
        assert prefill and all(no_mask and causal for _, no_mask, causal in prefill)
        if decode_attention == "matmul":
            assert not decode
        else:
            assert len(decode) == 2 * model.config.num_hidden_layers and not any(no_mask for _, no_mask, _ in decode)
    assert outputs["matmul"] == outputs["sdpa"] and sorted(outputs["sdpa"]) == list(range(4))


@pytest.mark.parametrize("cudnn_attention", [False, True])
def test_generation_keeps_cudnn_attention_off_unless_asked(tiny_model_dir, tiny_tokenizer, monkeypatch,
                                                           cudnn_attention):
    """cuDNN attention made repeated bf16 runs disagree on a GPU: generation turns it off for its own batches only
    (also through generate()), and the caller sees the global switch as it was between rows."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    between_rows = []
    for use_generate in (False, True):
        for _ in iter_token_ids(model, tiny_tokenizer, prompts(4), max_new_tokens=2, batch_size=2,
                                cudnn_attention=cudnn_attention, **({"use_cache": True} if use_generate else {})):
            between_rows.append(torch.backends.cuda.cudnn_sdp_enabled())
    assert seen and set(seen) == {cudnn_attention}
    assert between_rows == [True] * 8


def test_generate_path_pads_left_and_matches_the_greedy_loop(tiny_model, tiny_tokenizer):
    """Extra generate() options (or beams) go through `model.generate` on left-padded batches; greedy decisions there
    equal the own loop's on right-padded batches."""
    rows = prompts(6)
    tiny_tokenizer.padding_side = "right"  # the generate path must not depend on the tokenizer's setting
    loop = dict(iter_token_ids(tiny_model, tiny_tokenizer, rows, max_new_tokens=8, batch_size=6))
    through_generate = dict(iter_token_ids(tiny_model, tiny_tokenizer, rows, max_new_tokens=8, batch_size=6,
                                           use_cache=True))
    assert through_generate == loop
    beams = dict(iter_token_ids(tiny_model, tiny_tokenizer, rows, max_new_tokens=8, batch_size=6, num_beams=2))
    assert sorted(beams) == list(range(6)) and all(len(ids) <= 8 for ids in beams.values())


def test_dequantized_4bit_base_generates_as_the_4bit_one(tiny_model_dir, tiny_tokenizer):
    """dequantize_4bit_linears (evaluate.py --dequantize_4bit_base): an adapter on the NF4 base gives the same logits
    and greedy tokens with each 4-bit weight dequantized once, and no 4-bit layer is left."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig

    from sumtune.modeling import dequantize_4bit_linears, keep_4bit_weights_trainable_on_cpu

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]))
    model.eval()
    expected_weight = bnb.functional.dequantize_4bit(
        *(lambda w: (w.data, w.quant_state))(model.base_model.model.model.layers[0].mlp.fc1.base_layer.weight))
    assert dequantize_4bit_linears(model) == 12  # 2 layers x 6 projections
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    torch.testing.assert_close(model.base_model.model.model.layers[0].mlp.fc1.base_layer.weight, expected_weight)

    reference = get_peft_model(  # the same adapter on a freshly loaded 4-bit base
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                   target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])).eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" in k}, strict=False)
    # On the CPU bitsandbytes would otherwise repack the weights at the first eval forward and compute in bf16; on a
    # GPU a batched input always takes dequantize + matmul, the path compared here.
    keep_4bit_weights_trainable_on_cpu(reference)
    ids = tiny_tokenizer(["the council said", "a new report on rail fares"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits, rtol=1e-5, atol=1e-5)
    rows = prompts(5)
    assert (dict(iter_token_ids(model, tiny_tokenizer, rows, max_new_tokens=10, batch_size=4))
            == dict(iter_token_ids(reference, tiny_tokenizer, rows, max_new_tokens=10, batch_size=4)))


def test_adapter_merged_into_the_dequantized_base_computes_the_same_logits(tiny_model_dir, tiny_tokenizer):
    """merge_adapter_weights (evaluate.py --merge_adapter): after dequantizing the NF4 base, the adapter's update is
    added to the weights; the plain model that is left gives the logits of the unmerged adapter (fp32 here)."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import BitsAndBytesConfig

    from sumtune.config import ConfigError
    from sumtune.modeling import dequantize_4bit_linears, merge_adapter_weights

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]))
    model.eval()
    with pytest.raises(ConfigError, match="--dequantize_4bit_base true"):
        merge_adapter_weights(model)
    dequantize_4bit_linears(model)
    ids = tiny_tokenizer(["the council said", "a new report on rail fares"], return_tensors="pt", padding=True)
    with torch.no_grad():
        unmerged = model(**ids).logits
        with model.disable_adapter():
            base_logits = model(**ids).logits
        merged_model = merge_adapter_weights(model)
        merged = merged_model(**ids).logits
    assert not any(isinstance(m, (LoraLayer, bnb.nn.Linear4bit)) for m in merged_model.modules())
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    assert (unmerged - base_logits).abs().max() > 1e-2  # the adapter changes the logits: the check can see a miss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_rotary_attention_is_bitwise_phis(tiny_model_dir, dtype):
    """fused_rotary (greedy_batch's default): Phi attention with q and k rotated in place gives bitwise the logits
    of transformers' PhiAttention, with a KV cache too, and the class's forward is back afterwards."""
    from sumtune.generation import fused_rotary

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype, attn_implementation="sdpa").eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stock = model(ids[:, :15], use_cache=True)
        stock_next = model(ids[:, 15:], past_key_values=stock.past_key_values).logits
        with fused_rotary(model) as patched:
            fused = model(ids[:, :15], use_cache=True)
            fused_next = model(ids[:, 15:], past_key_values=fused.past_key_values).logits
    assert patched == model.config.num_hidden_layers
    assert torch.equal(fused.logits, stock.logits) and torch.equal(fused_next, stock_next)
    assert all("forward" not in vars(layer.self_attn) for layer in model.model.layers)


def test_merging_a_dora_adapter_in_memory_is_refused(tiny_model_dir):
    """merge_adapter_weights adds B·A only: a DoRA adapter (magnitude vector) would be merged wrongly, so it is
    refused with the way out named."""
    from peft import LoraConfig, get_peft_model

    from sumtune.config import ConfigError
    from sumtune.modeling import merge_adapter_weights

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["fc1"],
                                      task_type="CAUSAL_LM"))
    with pytest.raises(ConfigError, match="DoRA"):
        merge_adapter_weights(model)


def stock_greedy(model, tokenizer, prompt, new_tokens: int) -> list[int]:
    """Stock generate() on one unpadded prompt, every token forced (EOS banned), as iter_token_ids' rows."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def tiny_causal_lm(family: str, vocab_size: int, eos: int):
    """Random-weight tiny models with grouped key/value heads (4 query heads, 2 key/value heads; 1 for Qwen3, multi-
    query). Windows of 8 tokens, far shorter than the prompts, so a sliding layer that saw its whole past would
    give other tokens."""
    import transformers as tf

    from sumtune.tiny import tiny_phi_config

    shape = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=eos,
                 eos_token_id=eos, pad_token_id=eos)
    gemma = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                 layer_types=["sliding_attention", "full_attention"])
    build = {
        "phi": lambda: tf.PhiForCausalLM(tiny_phi_config(vocab_size, num_key_value_heads=2, eos_token_id=eos,
                                                         pad_token_id=eos)),
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**shape, tie_word_embeddings=True)),  # SmolLM2's layout
        "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**shape, sliding_window=8)),  # every layer sliding
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**shape, use_sliding_window=True, sliding_window=8,
                                                            max_window_layers=1)),  # layer 0 full, layer 1 sliding
        "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**shape | {"num_key_value_heads": 1}, head_dim=16)),
        # final_logit_softcapping this small saturates tanh: many logits round to the cap, and greedy must keep the
        # first of them as generate() does
        "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**shape, **gemma, final_logit_softcapping=0.02)),
        "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**shape, **gemma, attn_logit_softcapping=0.5,
                                                               attn_implementation="eager")),
    }[family]
    torch.manual_seed(0)
    return build().eval()


@pytest.mark.parametrize("family", ["phi", "llama", "mistral", "qwen2", "qwen3", "gemma3"])
def test_grouped_key_value_models_decode_on_the_fast_path_as_stock_generate(family, tiny_tokenizer, monkeypatch):
    """Grouped key/value heads, sliding-window layers, query/key norms: the matmul decoding attention (no SDPA call
    in a decoding step) and the SDPA fallback give, over a padded batch, the greedy tokens of stock generate() one
    row at a time."""
    from sumtune.generation import matmul_decode_supported

    model = tiny_causal_lm(family, len(tiny_tokenizer), tiny_tokenizer.eos_token_id)
    assert matmul_decode_supported(model)
    rows = prompts(5)  # different lengths: the batch is padded
    stock = [stock_greedy(model, tiny_tokenizer, row, 6) for row in rows]
    over_cache = []  # per SDPA call: keys beyond the queries (a decoding step; transformers may fold the groups
    sdpa = torch.nn.functional.scaled_dot_product_attention  # into the query axis)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda query, key, *a, **kw:
                        over_cache.append(key.shape[2] > query.shape[2]) or sdpa(query, key, *a, **kw))
    for decode_attention in ("matmul", "sdpa"):
        over_cache.clear()
        out = dict(iter_token_ids(model, tiny_tokenizer, rows, max_new_tokens=6, batch_size=8, min_new_tokens=6,
                                  decode_attention=decode_attention))
        assert [out[i] for i in range(len(rows))] == stock, decode_attention
        assert over_cache and any(over_cache) == (decode_attention == "sdpa")


def test_models_the_matmul_attention_does_not_cover_decode_with_sdpa(tiny_tokenizer):
    """Attention logit softcapping (Gemma2) is outside the matmul path: its decoding steps run the model's own
    attention with a mask per layer type (sliding and full), and give stock generate()'s greedy tokens."""
    from sumtune.generation import matmul_decode_supported

    model = tiny_causal_lm("gemma2", len(tiny_tokenizer), tiny_tokenizer.eos_token_id)
    assert not matmul_decode_supported(model)
    rows = prompts(4)
    out = dict(iter_token_ids(model, tiny_tokenizer, rows, max_new_tokens=6, batch_size=4, min_new_tokens=6))
    assert [out[i] for i in range(len(rows))] == [stock_greedy(model, tiny_tokenizer, row, 6) for row in rows]


@pytest.mark.parametrize(("heads", "kv_heads", "sliding_window"), [(4, 4, None), (8, 2, None), (6, 1, None),
                                                                   (4, 2, 5)])
def test_decode_attention_equals_masked_sdpa(heads, kv_heads, sliding_window):
    """One decoding step with grouped key/value heads over a cache where row r has written slots 0..position[r]
    equals float32 SDPA over the whole buffer with each key/value head repeated for its query heads and a padding
    (and sliding-window) mask."""
    from sumtune.generation import decode_attention_forward

    generator = torch.Generator().manual_seed(0)
    rows, slots, dim = 5, 23, 16
    position = torch.tensor([22, 0, 9, 4, 15])
    keys, values = (torch.randn(rows, kv_heads, slots, dim, generator=generator) for _ in range(2))
    query = torch.randn(rows, heads, 1, dim, generator=generator)
    out, _ = decode_attention_forward(None, query, keys, values, None, scaling=0.3, decode_position=position,
                                      sliding_window=sliding_window)
    slot = torch.arange(slots)
    visible = slot <= position[:, None]
    if sliding_window is not None:
        visible &= slot > position[:, None] - sliding_window
    repeat = heads // kv_heads  # query head h reads key/value head h // repeat
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, keys.repeat_interleave(repeat, 1), values.repeat_interleave(repeat, 1),
        attn_mask=visible[:, None, None, :], scale=0.3)
    assert out.shape == (rows, 1, heads, dim)
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)
    if sliding_window is not None:  # the window hides slots a plain padding mask shows
        full, _ = decode_attention_forward(None, query, keys, values, None, scaling=0.3, decode_position=position)
        assert (full - out).abs().max() > 0.1


def test_prefill_writes_the_keys_of_a_dynamic_cache_into_the_decoding_buffers(tiny_model_dir, tiny_tokenizer):
    """The prefill fills the decoding cache directly: per layer, the keys and values a DynamicCache would hold, then
    zeros up to the buffer's length (softmax weights of 0 must not meet NaN there); the prefill's own cache object
    keeps no layers, and the hidden states are the DynamicCache prefill's."""
    from transformers import DynamicCache

    from sumtune.generation import SlotCache

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([tiny_tokenizer.encode("A short article about the weather today.")] * 2)
    with torch.no_grad():
        reference = model.model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
        slots = SlotCache(ids.shape[1] + 5, torch.zeros(2, dtype=torch.long))
        prefill = slots.prefill_cache()
        hidden = model.model(input_ids=ids, past_key_values=prefill, use_cache=True).last_hidden_state
    assert torch.equal(hidden, reference.last_hidden_state) and len(prefill.layers) == 0
    assert len(slots.keys) == len(slots.values) == model.config.num_hidden_layers
    buffers_by_layer = zip(slots.keys, slots.values, strict=True)
    for layer, buffers in zip(reference.past_key_values.layers, buffers_by_layer, strict=True):
        for expected, buffer in zip((layer.keys, layer.values), buffers, strict=True):
            assert buffer.shape[2] == ids.shape[1] + 5
            assert torch.equal(buffer[:, :, :ids.shape[1]], expected)
            assert not buffer[:, :, ids.shape[1]:].any()
