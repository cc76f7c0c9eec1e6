"""CLI subcommands, one module each (see tl_glasses.cli)."""
from __future__ import annotations


def model_help(what: str = "model") -> str:
    """The ``--model`` help every subcommand shares: the embedded names, from the registry."""
    from ..models._embedded import embedded_names

    return (f"{what}: an embedded model ({', '.join(embedded_names())}), a Hugging Face name, or "
            "tiny:ARCH (a small random model: tiny:llama, tiny:gemma3, tiny:gpt2)")


def add_model_argument(p, default: str | None = "gemma-3-270m") -> None:
    p.add_argument("--model", default=default, help=model_help() + (f" (default: {default})" if default else ""))
