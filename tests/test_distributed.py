"""Beyond one process, on the CPU: DDP over gloo matches one process at the same global batch, two "nodes" on one
machine rendezvous through the SLURM script, and the multi-GPU accelerate configs and FSDP recipe parse and agree.

What the DDP test compares: every rank's loss is its token sum over the tokens of the whole global batch, times the
number of processes (transformers' `average_tokens_across_devices`, TRL's `compute_loss`), and the logged loss is
the mean over ranks, so the logged value is the global per-token mean either way. `log_history.json` keeps it at
full precision (the console rounds to 4 digits). The epoch logged with each step proves the global batch: 2 ranks
that failed to join one process group would each log half of it.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, write_jsonl

from sumtune.config import parse_args

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
DEMO_RECIPE = ROOT / "recipes/tiny/demo.yaml"
TIMEOUT = 300
TRAIN_ROWS = 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_env() -> dict:
    # Two cores shared by every process: one thread each keeps two ranks from starving one another.
    return os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def check(proc: subprocess.Popen | subprocess.CompletedProcess, what: str) -> None:
    out = proc.stdout if isinstance(proc, subprocess.CompletedProcess) else proc.communicate(timeout=TIMEOUT)[0]
    assert proc.returncode == 0, f"{what} failed:\n{out[-4000:]}"


def train_losses(run_dir: Path) -> list[dict]:
    history = json.loads((run_dir / "adapter/log_history.json").read_text())
    return [entry for entry in history if "loss" in entry]


@pytest.fixture(scope="module")
def demo_rows_dir(tmp_path_factory) -> Path:
    """16 distinct rows of the shipped demo data, so every batch differs (conftest's rows repeat 4 articles)."""
    folder = tmp_path_factory.mktemp("demo-rows")
    for split, start, n in (("train", 0, TRAIN_ROWS), ("validation", TRAIN_ROWS, 4), ("test", TRAIN_ROWS + 4, 4)):
        lines = (ROOT / "data/demo/train.jsonl").read_text().splitlines()[start:start + n]
        write_jsonl(folder / f"{split}.jsonl", [json.loads(line) for line in lines])
    return folder


def short_run(model_dir: Path, data_dir: Path, max_steps: int) -> dict:
    """Overrides of the demo recipe for a few logged steps and nothing else."""
    return {"model_name_or_path": str(model_dir), "dataset_name": str(data_dir), "max_steps": max_steps,
            "warmup_steps": 0, "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no", "report_to": "none"}


def as_flags(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tiny_model_dir, demo_rows_dir, tmp_path):
    """1 process x 4 rows and 2 gloo processes x 2 rows: the same loss at every step and the same adapter."""
    from safetensors.torch import load_file

    common = ["train.py", "--config", str(DEMO_RECIPE), *as_flags(short_run(tiny_model_dir, demo_rows_dir, 3)),
              "--use_cpu", "true"]  # torchrun does not pass accelerate's use_cpu on; without it no process group
    one = subprocess.Popen([sys.executable, *common, "--per_device_train_batch_size", "4",
                            "--output_dir", str(tmp_path / "one")], cwd=ROOT, env=cpu_env(), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    two = subprocess.Popen([ACCELERATE, "launch", "--config_file", "accelerate_configs/multi_cpu.yaml",
                            "--main_process_port", str(free_port()), *common, "--per_device_train_batch_size", "2",
                            "--output_dir", str(tmp_path / "two")], cwd=ROOT, env=cpu_env(), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(one, "1-process run")
    check(two, "2-process DDP run")

    one_log, two_log = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert [e["step"] for e in one_log] == [e["step"] for e in two_log] == [1, 2, 3]
    for a, b in zip(one_log, two_log, strict=True):
        assert a["epoch"] == b["epoch"] == a["step"] * 4 / TRAIN_ROWS  # both consumed 4 rows per optimizer step
        assert a["num_tokens"] == b["num_tokens"]  # and the same rows
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)

    one_w = load_file(tmp_path / "one/adapter/adapter_model.safetensors")
    two_w = load_file(tmp_path / "two/adapter/adapter_model.safetensors")
    assert one_w.keys() == two_w.keys()
    assert any(name.endswith("lora_B.weight") and w.abs().max() > 0 for name, w in one_w.items())  # it trained
    # Summing a batch of 4 in one process or 2 + 2 over gloo rounds differently (~1e-7); AdamW divides by sqrt(v), so
    # on an element whose gradient is near zero that can move the weight by up to ~1e-5 after 3 steps of lr 3e-3.
    for name, w in one_w.items():
        diff = w - two_w[name]
        assert diff.abs().max() < 1e-4 and diff.norm() < 1e-4 * w.norm(), name


@pytest.mark.slow
def test_two_nodes_rendezvous_through_slurm_script(tiny_model_dir, demo_rows_dir, tmp_path):
    """scripts/slurm/train.sbatch with stand-in srun/scontrol: 2 'nodes' on this machine, one CPU process each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\nprintf '127.0.0.1\\nlocalhost\\n'\n")
    # srun's stand-in starts the command once per node, in parallel, as one task per node would be.
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\npids=()\n'
        'for ((node = 0; node < SLURM_NNODES; node++)); do\n'
        '    SLURM_NODEID=$node SLURM_PROCID=$node "$@" > "$LOG_DIR/node$node.log" 2>&1 &\n    pids+=($!)\ndone\n'
        'status=0\nfor pid in "${pids[@]}"; do wait "$pid" || status=1; done\nexit $status\n')
    for stub in ("scontrol", "srun"):
        (bin_dir / stub).chmod(0o755)
    recipe = yaml.safe_load(DEMO_RECIPE.read_text()) | short_run(tiny_model_dir, demo_rows_dir, 2)
    recipe["per_device_train_batch_size"] = 2
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    # The CPU recipe trains in full precision; the launcher's precision must say the same.
    config = yaml.safe_load((ROOT / "accelerate_configs/multi_node.yaml").read_text()) | {"mixed_precision": "no"}
    (tmp_path / "multi_node_cpu.yaml").write_text(yaml.safe_dump(config))
    output_dir = tmp_path / "run"
    env = cpu_env() | {
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LOG_DIR": str(tmp_path), "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node[1-2]", "GPUS_PER_NODE": "1", "MAIN_PORT": str(free_port()),
        "RECIPE": str(tmp_path / "recipe.yaml"), "ACCELERATE_CONFIG": str(tmp_path / "multi_node_cpu.yaml"),
        "OUTPUT_DIR": str(output_dir),
    }
    result = subprocess.run(["bash", "scripts/slurm/train.sbatch", "--use_cpu", "true"], cwd=ROOT, env=env,
                            text=True, capture_output=True, timeout=TIMEOUT)
    logs = {node: (tmp_path / f"node{node}.log").read_text() for node in (0, 1)
            if (tmp_path / f"node{node}.log").exists()}
    assert result.returncode == 0, f"{result.stdout[-2000:]}{result.stderr[-2000:]}\n" + "\n".join(
        f"--- node {node}\n{log[-3000:]}" for node, log in logs.items())
    assert "main: 127.0.0.1:" in result.stdout and "machines: 2  processes: 2" in result.stdout
    assert all("Traceback" not in log for log in logs.values())

    entries = sorted(path.name for path in output_dir.iterdir())
    assert entries == ["adapter", "data", "run_config.json"], entries  # one adapter, no leftover adapter.tmp
    assert (output_dir / "adapter/adapter_model.safetensors").is_file()
    losses = train_losses(output_dir)
    # 2 ranks x 2 rows per step: the epoch advances by 4/16 per step only if the two nodes formed one group.
    assert [(e["step"], e["epoch"]) for e in losses] == [(1, 0.25), (2, 0.5)]


MY_CONFIGS = {"multi_cpu.yaml": ("MULTI_GPU", "no"), "fsdp_qlora.yaml": ("FSDP", "bf16"),
              "multi_node.yaml": ("MULTI_GPU", "bf16")}


@pytest.mark.parametrize("name", sorted(MY_CONFIGS))
def test_distributed_accelerate_config_loads(name):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(ROOT / "accelerate_configs" / name))
    distributed_type, precision = MY_CONFIGS[name]
    assert str(loaded.distributed_type).endswith(distributed_type) and str(loaded.mixed_precision) == precision
    assert loaded.num_processes >= loaded.num_machines >= 1


def test_fsdp_qlora_config_wraps_phi_decoder_layers(tiny_model_dir, monkeypatch):
    """The environment `accelerate launch` gives the processes, and PEFT's wrap policy the Trainer builds from it."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env
    from peft import LoraConfig, get_peft_model
    from peft.utils.other import fsdp_auto_wrap_policy
    from transformers import AutoModelForCausalLM
    from transformers.models.phi.modeling_phi import PhiDecoderLayer

    args = launch_command_parser().parse_args(["--config_file", "accelerate_configs/fsdp_qlora.yaml", "train.py"])
    monkeypatch.chdir(ROOT)
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "1"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "PhiDecoderLayer"
    # transformers' cpu-RAM-efficient loading is on only with both of these (rank 0's weights are then broadcast).
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == env["FSDP_SYNC_MODULE_STATES"] == "true"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"  # else Trainer.save_model writes no adapter
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "false"  # the recipe checkpoints; the Trainer refuses both
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"

    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", env["FSDP_TRANSFORMER_CLS_TO_WRAP"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                           LoraConfig(r=4, target_modules=["q_proj", "fc1"], task_type="CAUSAL_LM"))
    policy = fsdp_auto_wrap_policy(model)  # what the Trainer installs for FSDP + PEFT (update_fsdp_plugin_peft)
    wrapped = [name for name, module in model.named_modules() if policy(module=module, recurse=False,
                                                                         nonwrapped_numel=0)]
    layers = [name for name, module in model.named_modules() if isinstance(module, PhiDecoderLayer)]
    assert len(layers) == model.config.num_hidden_layers and set(layers) <= set(wrapped)
    # Each trainable LoRA layer gets a unit of its own, so no flat parameter mixes frozen and trainable weights.
    assert {n for n in wrapped if "lora_" in n} == {n for n, m in model.named_modules()
                                                    if "lora_" in n and getattr(m, "weight", None) is not None}


def test_fsdp_recipe_matches_its_quant_storage_and_checkpointing(in_repo):
    _, _, training_args, model_args = parse_args(["--config", "recipes/phi-2/qlora-fsdp.yaml", "--use_cpu", "true"])
    assert training_args.bf16 and not training_args.fp16 and model_args.dtype == "bfloat16"
    # FSDP shards float tensors only: the 4-bit weights are packed in the compute dtype.
    assert model_args.load_in_4bit and model_args.bnb_4bit_quant_storage == model_args.dtype
    assert training_args.gradient_checkpointing and training_args.gradient_checkpointing_kwargs == {
        "use_reentrant": False}
    from trl import get_quantization_config

    quantization = get_quantization_config(model_args)
    assert quantization.bnb_4bit_quant_storage == quantization.bnb_4bit_compute_dtype


def _precision(recipe: Path) -> str:
    values = yaml.safe_load(recipe.read_text())
    return "fp16" if values.get("fp16") else "bf16" if values.get("bf16") else "no"


def _named(path: Path, folder: str) -> set[Path]:
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    return {ROOT / name for name in re.findall(rf"{folder}/[\w./-]+\.yaml", header)}


@pytest.mark.parametrize("config", sorted((ROOT / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_and_accelerate_configs_named_together_agree_on_precision(config):
    """Every recipe an accelerate config names (and every config a recipe names) has the same mixed precision."""
    from accelerate.commands.config.config_args import load_config_from_file

    pairs = {(config, recipe) for recipe in _named(config, "recipes")}
    pairs |= {(config, recipe) for recipe in (ROOT / "recipes").rglob("*.yaml") if config in _named(recipe,
                                                                                                    "accelerate_configs")}
    for _, recipe in pairs:
        assert recipe.is_file(), f"{config.name} names {recipe}, which does not exist"
        assert str(load_config_from_file(str(config)).mixed_precision) == _precision(recipe), (config.name, recipe)
