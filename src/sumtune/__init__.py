"""sumtune: fine-tune small decoder-only language models into abstractive summarizers with QLoRA."""

__version__ = "0.1.0"
