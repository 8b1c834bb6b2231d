"""The chat-style prompt: one template from `prompts/`, used identically for training and generation."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .config import ConfigError

DEFAULT_CHAT_TEMPLATE = "prompts/chat_template.jinja"


def read_text(path: str | Path, what: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}. Run from the repository root or pass the right path.")
    return path.read_text(encoding="utf-8")


def load_chat_template(path: str | None) -> str:
    template = read_text(path or DEFAULT_CHAT_TEMPLATE, "Chat template")
    if "eos_token" not in template:
        raise ConfigError(f"Chat template {path} never emits `eos_token`: the assistant turn must end with EOS, "
                          "or the model never learns to stop.")
    return template


def build_messages(instruction: str, article: str, summary: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Conversational prompt-completion row, the format TRL's SFTTrainer trains with completion-only loss."""
    row = {"prompt": [{"role": "system", "content": instruction.strip()}, {"role": "user", "content": article}]}
    if summary is not None:
        row["completion"] = [{"role": "assistant", "content": summary}]
    return row


def render_prompt(tokenizer, prompt: list[dict[str, str]]) -> str:
    """The text the model sees before it writes the summary."""
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def render_full(tokenizer, prompt: list[dict[str, str]], completion: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(prompt + completion, tokenize=False)


def template_hash(template: str, instruction: str) -> str:
    return hashlib.sha256((template + "\0" + instruction).encode("utf-8")).hexdigest()[:16]
