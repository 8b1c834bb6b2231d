"""A few real QLoRA steps on the CPU: NF4 4-bit base through bitsandbytes, LoRA through PEFT, TRL's SFTTrainer."""

import json

import pytest
import torch
from conftest import ROOT

from sumtune import modeling
from sumtune.config import parse_args
from sumtune.modeling import layer_norm_in_input_dtype, upcast_trainable_params
from sumtune.training import build_trainer, train


def recipe_args(tiny_model_dir, data_dir, output_dir, *extra, recipe=ROOT / "recipes/tiny/demo.yaml"):
    return parse_args([
        "--config", str(recipe),
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data_dir),
        "--output_dir", str(output_dir), "--max_length", "256", "--max_steps", "3",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", "--eval_strategy", "no",
        "--save_strategy", "no", "--report_to", "none", "--learning_rate", "1e-2", *extra,
    ])


def test_qlora_steps_train_adapter_and_freeze_base(tiny_model_dir, data_dir, tmp_path, in_repo):
    # As in the Phi-2 recipes: LoRA only (the demo recipe also trains the random base's embeddings and output layer).
    recipe = tmp_path / "lora-only.yaml"
    recipe.write_text("".join(line for line in (ROOT / "recipes/tiny/demo.yaml").read_text().splitlines(True)
                              if not line.startswith("lora_modules_to_save")))
    data_args, _, training_args, model_args = recipe_args(tiny_model_dir, data_dir, tmp_path / "run", recipe=recipe)
    trainer = build_trainer(data_args, training_args, model_args)
    model = trainer.model
    assert model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.__class__.__name__ == "Linear4bit"
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targets == {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    params = dict(model.named_parameters())
    assert all(torch.equal(frozen[n], params[n]) for n in frozen), "a base weight changed"
    changed = [n for n in trainable if not torch.equal(trainable[n], params[n])]
    assert len(changed) >= len(trainable) // 2, "adapter weights did not train"


def test_adapters_stay_fp32_although_trl_casts_them_to_bf16(tiny_model_dir, data_dir, tmp_path, in_repo,
                                                            monkeypatch):
    """TRL casts QLoRA adapters to bf16; fp16's grad scaler cannot unscale bf16 grads, so they must stay fp32."""
    from sumtune import training

    cast = []
    monkeypatch.setattr(training, "upcast_trainable_params",
                        lambda model: cast.append({p.dtype for p in model.parameters() if p.requires_grad})
                        or upcast_trainable_params(model))
    data_args, _, training_args, model_args = recipe_args(tiny_model_dir, data_dir, tmp_path / "run")
    trainer = build_trainer(data_args, training_args, model_args)
    assert cast == [{torch.bfloat16}], "TRL no longer casts to bf16: revisit the fp32 fix"
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}


def test_train_saves_adapter_with_tokenizer_prompt_and_config(tiny_model_dir, data_dir, tmp_path, in_repo):
    output_dir = tmp_path / "run"
    data_args, _, training_args, model_args = recipe_args(tiny_model_dir, data_dir, output_dir,
                                                          "--report_to", "tensorboard")
    adapter = train(data_args, training_args, model_args)
    assert adapter == output_dir / "adapter" and not (output_dir / "adapter.tmp").exists()
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "instruction.txt", "run_config.json", "manifest.json"):
        assert (adapter / name).is_file(), name
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(adapter / "adapter_model.safetensors").values()} == {torch.float32}
    config = json.loads((adapter / "run_config.json").read_text())
    assert config["model"]["lora_r"] == 16 and config["training"]["max_steps"] == 3
    # transformers masks every `*_token` field as `<EOS_TOKEN>` etc.; only credentials stay hidden
    assert config["training"]["eos_token"] is None and config["training"]["hub_token"] == "<redacted>"
    assert (output_dir / "data" / "stats.json").is_file()
    events = list(output_dir.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm"} <= tags


def test_rouge_is_logged_at_each_evaluation(tiny_model_dir, data_dir, tmp_path, in_repo):
    data_args, eval_args, training_args, model_args = recipe_args(
        tiny_model_dir, data_dir, tmp_path / "run", "--max_steps", "4", "--eval_strategy", "steps", "--eval_steps",
        "2", "--rouge_eval_samples", "3", "--max_new_tokens", "6", "--report_to", "tensorboard")
    trainer = build_trainer(data_args, training_args, model_args, eval_args)
    padding_side = trainer.processing_class.padding_side
    trainer.train()
    rouge = [entry for entry in trainer.state.log_history if "eval_rouge1" in entry]
    assert [entry["step"] for entry in rouge] == [2, 4]
    assert all(0 <= entry["eval_rouge1"] <= 100 and entry["eval_rouge_seconds"] > 0 for entry in rouge)
    assert trainer.processing_class.padding_side == padding_side  # training data is padded on the right again
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in (tmp_path / "run").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"eval/rouge1", "eval/rouge2", "eval/rougeL", "eval/loss"} <= tags


def test_checkpoint_every_n_layers_recomputes_only_those_layers(tiny_model_dir, data_dir, tmp_path, in_repo):
    """With checkpointing on every 2nd layer, or on all but the last layer, layer 0 runs its LayerNorm twice per step
    (forward, then the recompute in backward; the recompute stops early, before the layer's last modules) and layer 1
    once. The losses and the trained adapter equal full checkpointing's (the same math)."""
    runs = {}
    settings = ((1, []), (2, ["--checkpoint_every_n_layers", "2"]), ("last", ["--uncheckpointed_layers", "1"]))
    for every, flags in settings:
        torch.manual_seed(0)
        data_args, _, training_args, model_args = recipe_args(
            tiny_model_dir, data_dir, tmp_path / f"run{every}", "--gradient_checkpointing", "true", *flags,
            "--max_steps", "2")
        trainer = build_trainer(data_args, training_args, model_args)
        layers = trainer.model.base_model.model.model.layers
        calls = [0] * len(layers)
        for i, layer in enumerate(layers):
            layer.input_layernorm.register_forward_hook(lambda *_, i=i, calls=calls: calls.__setitem__(i, calls[i] + 1))
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        adapter = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        runs[every] = calls, [layer.gradient_checkpointing for layer in layers], losses, adapter
    assert runs[1][:2] == ([4, 4], [True, True])  # 2 steps x (forward + recompute)
    assert runs[2][:2] == runs["last"][:2] == ([4, 2], [True, False])
    assert runs[1][2] == runs[2][2] == runs["last"][2]
    for name, weight in runs[1][3].items():
        torch.testing.assert_close(runs[2][3][name], weight)
        torch.testing.assert_close(runs["last"][3][name], weight)


def test_uncheckpointed_layers_are_the_last_ones():
    """On 4 layers: the last 2 stop recomputing, the first 2 keep it; every 2nd layer would give another pattern."""
    from transformers import PhiConfig, PhiForCausalLM

    model = PhiForCausalLM(PhiConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                     num_attention_heads=2))
    model.gradient_checkpointing_enable()
    assert modeling.checkpoint_every_n_layers(model, 1, 2) == (2, 4)
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, True, False, False]
    model.gradient_checkpointing_enable()
    assert modeling.checkpoint_every_n_layers(model, 2) == (2, 4)
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, False, True, False]


def train_two_steps_and_evaluate(tiny_model_dir, data_dir, output_dir, *extra):
    """(training losses, trained adapter, eval loss) of 2 seeded steps without LoRA dropout."""
    torch.manual_seed(0)
    data_args, _, training_args, model_args = recipe_args(
        tiny_model_dir, data_dir, output_dir, "--max_steps", "2", "--lora_dropout", "0", "--eval_strategy", "steps",
        "--eval_steps", "100", "--rouge_eval_samples", "0", *extra)
    trainer = build_trainer(data_args, training_args, model_args)
    trainer.train()
    eval_loss = trainer.evaluate()["eval_loss"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    adapter = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return losses, adapter, eval_loss


def test_causal_only_training_attention_drops_the_padding_mask_and_keeps_the_loss(tiny_model_dir, data_dir, tmp_path,
                                                                                 in_repo, monkeypatch):
    """Right-padded training batches run SDPA causal-only without a mask (so it may pick flash attention), and the
    losses and trained adapter equal those with the padding mask; evaluation keeps the mask."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    runs = {}
    for causal_only in ("false", "true"):
        calls = []

        def spy(query, key, value, attn_mask=None, is_causal=False, calls=calls, **kwargs):
            calls.append((torch.is_grad_enabled(), attn_mask is None and is_causal))
            return sdpa(query, key, value, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
        runs[causal_only] = calls, *train_two_steps_and_evaluate(
            tiny_model_dir, data_dir, tmp_path / f"run-{causal_only}", "--causal_only_training_attention", causal_only,
            "--attn_implementation", "sdpa")
    (masked, masked_losses, masked_adapter, masked_eval), (causal, losses, adapter, eval_loss) = runs.values()
    # The batches are padded, so the baseline's training forwards have a mask; with the switch none do.
    assert [no_mask for grad, no_mask in masked if grad] == [False] * 4  # 2 steps x 2 layers
    assert [no_mask for grad, no_mask in causal if grad] == [True] * 4
    evaluation = [no_mask for grad, no_mask in causal if not grad]
    assert evaluation and not any(evaluation)  # eval mode keeps the mask
    torch.testing.assert_close(losses, masked_losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(eval_loss, masked_eval, rtol=1e-5, atol=1e-6)
    for name, weight in masked_adapter.items():
        torch.testing.assert_close(adapter[name], weight, rtol=1e-4, atol=1e-6)


def test_compiled_decoder_layers_train_as_eager_ones_and_evaluation_stays_eager(tiny_model_dir, data_dir, tmp_path,
                                                                                 in_repo, monkeypatch, request):
    """compile_decoder_layers: the training forwards go through one torch.compile'd graph per shape with no graph
    break (bitsandbytes' in-place bias cast would cause one), losses, eval loss and adapter equal the eager run's, and
    evaluation calls the eager forward."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    runs = {}
    request.addfinalizer(torch._dynamo.reset)  # no compiled code or counters left for later tests
    for compiled in ("false", "true"):
        calls = []

        def spy(fn, *args, calls=calls, **kwargs):
            graph = compile_(fn, *args, **kwargs)

            def call(*a, **k):
                calls.append(torch.is_grad_enabled())
                return graph(*a, **k)
            return call

        monkeypatch.setattr(torch, "compile", spy)
        torch._dynamo.reset()
        counters.clear()
        run = train_two_steps_and_evaluate(tiny_model_dir, data_dir, tmp_path / f"run-{compiled}",
                                           "--compile_decoder_layers", compiled, "--gradient_checkpointing", "true")
        runs[compiled] = calls, *run, dict(counters["graph_break"]), counters["stats"].copy()
    eager_run, compiled_run = runs["false"], runs["true"]
    assert eager_run[0] == [] and eager_run[5]["unique_graphs"] == 0
    calls, losses, adapter, eval_loss, graph_breaks, stats = compiled_run
    assert len(calls) >= 4 and all(calls)  # 2 steps x 2 layers (x2 where the recompute calls forward again); no eval
    assert graph_breaks == {} and 1 <= stats["unique_graphs"] <= 2  # one graph for both layers (+1 for a new length)
    torch.testing.assert_close(losses, eager_run[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eval_loss, eager_run[3], rtol=1e-5, atol=1e-6)
    for name, weight in eager_run[2].items():
        torch.testing.assert_close(adapter[name], weight, rtol=1e-3, atol=1e-4)  # Adam on fused sums


def test_compiling_gives_frozen_4bit_biases_the_compute_dtype(tiny_model_dir):
    """bitsandbytes casts a bias of another dtype in place at its first forward, a graph break under torch.compile;
    compile_decoder_layers_for_training does that cast first, for frozen biases only."""
    import bitsandbytes as bnb
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = prepare_model_for_kbit_training(  # as TRL does: every non-4-bit parameter, biases included, to fp32
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant, dtype=torch.bfloat16))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert {m.bias.dtype for m in layers} == {torch.float32}
    layers[0].bias.requires_grad_(True)  # a trained bias keeps its precision
    assert modeling.compile_decoder_layers_for_training(model) == 2
    assert layers[0].bias.dtype == torch.float32
    assert {m.bias.dtype for m in layers[1:]} == {torch.bfloat16}
    assert all(not isinstance(layer.forward, type(model.forward)) for layer in model.model.layers)  # dispatch set


def test_layer_norm_runs_in_its_input_dtype_with_autocast_off(monkeypatch):
    """CUDA autocast would run Phi-2's LayerNorms in fp32 and turn the whole residual stream fp32; the bf16 recipes
    run them in bf16 (statistics still accumulate in fp32 inside the kernel)."""
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    config = PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    model = PhiForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        before = model(ids).logits
    assert layer_norm_in_input_dtype(model) == 3  # one per decoder layer and the final one

    calls = []
    real = modeling.F.layer_norm

    def spy(x, *args, **kwargs):
        calls.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(modeling.F, "layer_norm", spy)
    norm = model.model.final_layernorm
    x = torch.randn(3, 5, 32).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert calls == [(torch.bfloat16, False)] and out.dtype == torch.bfloat16
    exact = real(x.float(), (32,), norm.weight.float(), norm.bias.float(), norm.eps)
    torch.testing.assert_close(out.float(), exact, rtol=2e-2, atol=2e-2)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before)  # same function as before the switch



def test_finished_adapter_is_reused_refused_or_replaced(tiny_model_dir, data_dir, tmp_path, in_repo, monkeypatch):
    from sumtune import training
    from sumtune.config import ConfigError

    def run(*extra):
        data_args, eval_args, training_args, model_args = recipe_args(tiny_model_dir, data_dir, tmp_path / "run",
                                                                      "--save_strategy", "steps", "--save_steps", "3",
                                                                      *extra)
        return train(data_args, training_args, model_args, eval_args)

    adapter = run()
    assert (tmp_path / "run" / "checkpoint-3").is_dir()
    first = json.loads((adapter / "manifest.json").read_text())
    with monkeypatch.context() as patch:
        patch.setattr(training, "build_trainer", lambda *args, **kwargs: pytest.fail("trained again"))
        assert run() == adapter  # the same settings: reused
        with pytest.raises(ConfigError, match=r"learning_rate: 0\.01 -> 0\.02.*--overwrite_output_dir true"):
            run("--learning_rate", "2e-2")
    assert run("--learning_rate", "2e-2", "--overwrite_output_dir", "true") == adapter
    replaced = json.loads((adapter / "manifest.json").read_text())
    assert replaced["config"]["training"]["learning_rate"] == 2e-2 and replaced["created"] >= first["created"]
    assert replaced["resumed_from"] is None  # the replaced run's checkpoint-3 was removed, not resumed
