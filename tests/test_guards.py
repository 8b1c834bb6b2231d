"""The NaN guard, precision preflight and safety defaults."""

import json

import pytest
import torch
from helpers_crash import make_data
from transformers import TrainerCallback

from sumtune.config import ConfigError, RunError, parse_args
from sumtune.preflight import check_precision
from sumtune.training import build_trainer, train


def tiny_args(tiny_model_dir, data, output_dir, *extra):
    return parse_args(["--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(tiny_model_dir),
                       "--dataset_name", str(data), "--output_dir", str(output_dir), "--max_length", "256",
                       "--max_steps", "6", "--per_device_train_batch_size", "4", "--logging_steps", "1",
                       "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
                       *extra])


class PoisonAt(TrainerCallback):
    """At the start of step `step`, turn one adapter weight into NaN (loss) or make its gradient inf (grad)."""

    def __init__(self, step: int, what: str):
        self.step, self.what = step, what

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 != self.step:
            return
        param = next(p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)
        if self.what == "loss":
            with torch.no_grad():
                param.fill_(float("nan"))
        else:
            param.register_hook(lambda grad: torch.full_like(grad, float("inf")))


@pytest.mark.parametrize("what", ["loss", "grad"])
def test_nan_stops_at_its_step_naming_the_last_checkpoint(what, tiny_model_dir, tmp_path, in_repo):
    out = tmp_path / "run"
    data_args, _, training_args, model_args = tiny_args(tiny_model_dir, make_data(tmp_path / "data"), out)
    trainer = build_trainer(data_args, training_args, model_args)
    trainer.add_callback(PoisonAt(3, what))
    with pytest.raises(RunError) as err:
        trainer.train()
    message = str(err.value)
    assert "at step 3" in message and str(out / "checkpoint-2") in message, message
    assert ("loss" if what == "loss" else "gradient") in message
    assert trainer.state.global_step == 2, "the poisoned step must not be applied"
    assert not (out / "checkpoint-4").exists()
    if what == "grad":  # stopped before the optimizer step: the weights are still finite
        assert all(torch.isfinite(p).all() for p in trainer.model.parameters() if p.requires_grad)


def test_fp16_overflow_alone_is_left_to_the_grad_scaler(tiny_model_dir, tmp_path, in_repo):
    from sumtune.training import NonFiniteGuard

    guard = NonFiniteGuard()

    class Args:
        fp16, output_dir = True, str(tmp_path)

    class State:
        global_step = 4

    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.full_like(model.weight, float("inf"))
    guard.on_pre_optimizer_step(Args, State, None, model=model)  # one skipped step: no error
    Args.fp16 = False
    with pytest.raises(RunError, match="at step 5"):
        guard.on_pre_optimizer_step(Args, State, None, model=model)


def test_precision_preflight_on_cpu(monkeypatch):
    data_args, _, training_args, model_args = parse_args(["--fp16", "true", "--dtype", "float16"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="fp16: false"):
        check_precision(training_args, model_args, training=True)
    check_precision(training_args, model_args, training=False)  # evaluation of an fp16 model on a CPU is allowed


def test_bf16_without_bf16_gpu_points_to_the_t4_recipe(monkeypatch):
    data_args, _, training_args, model_args = parse_args(["--dtype", "bfloat16"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(ConfigError, match="recipes/phi-2/qlora-t4.yaml"):
        check_precision(training_args, model_args, training=True)


def test_full_disk_is_refused_before_loading(tiny_model_dir, tmp_path, monkeypatch, in_repo):
    import shutil

    from sumtune import training

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    monkeypatch.setattr(training, "load_model", lambda *a, **k: pytest.fail("model loaded before the disk check"))
    data_args, _, training_args, model_args = tiny_args(tiny_model_dir, make_data(tmp_path / "data"), tmp_path / "o")
    with pytest.raises(ConfigError, match="GiB free"):
        train(data_args, training_args, model_args)


def test_hub_token_is_never_saved(tiny_model_dir, tmp_path, in_repo, monkeypatch):
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        parse_args(["--hub_token", "hf_secret123"])
    monkeypatch.setenv("HF_TOKEN", "hf_secret123")
    out = tmp_path / "run"
    args = tiny_args(tiny_model_dir, make_data(tmp_path / "data"), out, "--max_steps", "1", "--save_strategy", "no")
    adapter = train(args[0], args[2], args[3])
    for path in [*adapter.iterdir(), out / "run_config.json"]:
        if path.is_file():
            assert b"hf_secret123" not in path.read_bytes(), path
    manifest = json.loads((adapter / "manifest.json").read_text())
    for key in ("config", "git_commit", "versions", "dataset_fingerprint", "prompt_hash", "device"):
        assert manifest.get(key), key


def test_safety_defaults(tiny_model_dir):
    import os

    import sumtune.cli  # noqa: F401  (sets the torch.load default for the entry points)
    from sumtune.modeling import model_init_kwargs

    assert os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"
    kwargs = model_init_kwargs(parse_args(["--model_name_or_path", str(tiny_model_dir)])[3])
    assert kwargs["trust_remote_code"] is False and kwargs["use_safetensors"] is True
