"""The chat-style prompt: one template from `prompts/` and one instruction, used identically for training and
generation, with one rule for cutting articles to the token budget (`fit_to_budget`; `Prompt`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

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


def fit_to_budget(tokenizer, instruction: str, article: str, summary: str, max_length: int) -> dict | None:
    """Cut the article (never the summary) so prompt + summary + EOS fit `max_length` tokens.

    Returns the prompt-completion row with its token count, or None when even an empty article cannot fit.
    The cut falls on a token boundary of the article, found through the fast tokenizer's character offsets.
    """
    article = article.strip()
    summary = summary.strip()
    offsets = None
    cut = article
    for _ in range(8):  # the join between article and template can merge a token: re-check until it fits
        row = build_messages(instruction, cut, summary)
        n_tokens = len(tokenizer(render_full(tokenizer, row["prompt"], row["completion"]),
                                 add_special_tokens=False)["input_ids"])
        if n_tokens <= max_length:
            return {**row, "document": cut, "num_tokens": n_tokens, "truncated": cut != article}
        if offsets is None:
            offsets = tokenizer(article, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = len(offsets)
        keep -= n_tokens - max_length
        if keep <= 0:
            return None
        cut = article[: offsets[keep - 1][1]].rstrip()
    return None


@dataclass(frozen=True)
class Prompt:
    """The prompt a model is trained and asked with: the tokenizer's chat template (as `modeling.load_tokenizer` set
    it, BOS first where due) and the instruction. `hash` identifies the pair in every manifest.

    For generation the article is cut so that the prompt leaves `max_new_tokens` of `max_length` for the summary;
    evaluate.py, summarize.py and the in-training ROUGE callback all cut it so (`for_generation`), so one article
    gets one prompt whichever of them asks.
    """

    tokenizer: object
    instruction: str

    @classmethod
    def load(cls, tokenizer, instruction_path: str | Path) -> Prompt:
        return cls(tokenizer, read_text(instruction_path, "Instruction file"))

    @property
    def hash(self) -> str:
        return template_hash(self.tokenizer.chat_template, self.instruction)

    def fit(self, article: str, summary: str, max_length: int) -> dict | None:
        """A training row: prompt + summary + EOS within max_length (see fit_to_budget)."""
        return fit_to_budget(self.tokenizer, self.instruction, article, summary, max_length)

    def for_generation(self, article: str, max_length: int, max_new_tokens: int) -> list[dict] | None:
        """The conversational prompt for `article`, cut so that the summary has max_new_tokens of max_length;
        None when not even an empty article leaves that room."""
        fitted = fit_to_budget(self.tokenizer, self.instruction, article, "", max_length - max_new_tokens)
        return None if fitted is None else fitted["prompt"]
