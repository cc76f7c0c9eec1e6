"""Tiny random models for tests and quick experiments: built offline, in well under
a second, from a local ``transformers`` config, with a character-level tokenizer
in which every digit, letter and separator is one token."""
from __future__ import annotations

import string
from functools import lru_cache

import torch

from ..errors import UnknownNameError

__all__ = ["char_tokenizer", "tiny_hf_model", "tiny_model", "TINY_ARCHS"]

TINY_ARCHS = ("llama", "gemma3", "gpt2")
_SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


@lru_cache(maxsize=4)
def _char_tokenizer_object(prepend_bos: bool):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    chars = list(dict.fromkeys(string.printable))  # digits, letters, punctuation, whitespace
    vocab = {t: i for i, t in enumerate(_SPECIAL + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    if prepend_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return tok


def char_tokenizer(prepend_bos: bool = True):
    """A character-level ``PreTrainedTokenizerFast``: one token per character."""
    from transformers import PreTrainedTokenizerFast

    import copy

    tok = PreTrainedTokenizerFast(
        tokenizer_object=copy.deepcopy(_char_tokenizer_object(prepend_bos)),
        bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        # TransformerLens re-loads tokenizers by name unless add_bos_token is set; this
        # one exists only in memory, so say it is set (the post-processor decides).
        name_or_path="tl_glasses/char", add_bos_token=True,
    )
    tok.padding_side = "right"
    return tok


def tiny_hf_model(
    arch: str = "llama",
    *,
    seed: int = 0,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_mlp: int | None = None,
    n_ctx: int = 512,
    sliding_window: int = 8,
    init_std: float = 0.1,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
):
    """The plain ``transformers`` model behind :func:`tiny_model` (eager attention,
    eval mode). Built fresh from a config: no network, no files."""
    import transformers

    vocab_size = vocab_size or len(char_tokenizer().get_vocab())
    d_mlp = d_mlp or 2 * d_model
    head_dim = d_model // n_heads
    common = dict(vocab_size=vocab_size, initializer_range=init_std, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2)
    if arch == "llama":
        cfg = transformers.LlamaConfig(
            hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_kv_heads or max(1, n_heads // 2),
            max_position_embeddings=n_ctx, tie_word_embeddings=False, **common,
        )
        cls = transformers.LlamaForCausalLM
    elif arch == "gemma3":
        # Gemma 3's pattern in miniature: local sliding-window layers, every third global.
        layer_types = [
            "full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(n_layers)
        ]
        cfg = transformers.Gemma3TextConfig(
            hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_kv_heads or 1, head_dim=head_dim,
            max_position_embeddings=n_ctx, sliding_window=sliding_window, layer_types=layer_types,
            query_pre_attn_scalar=head_dim, **common,
        )
        cls = transformers.Gemma3ForCausalLM
    elif arch == "gpt2":
        cfg = transformers.GPT2Config(
            n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_inner=d_mlp, n_positions=n_ctx,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
        cls = transformers.GPT2LMHeadModel
    else:
        raise UnknownNameError("tiny architecture", arch, TINY_ARCHS)
    cfg.architectures = [cls.__name__]
    cfg._attn_implementation = "eager"
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        model = cls(cfg)
    return model.to(dtype).eval()


def tiny_model(arch: str = "llama", seed: int = 0, *, prepend_bos: bool = True, **kwargs):
    """A small random model wrapped as a TransformerBridge, with a character-level
    tokenizer (digits and separators are single tokens). Offline, well under a second.

    ``kwargs`` go to :func:`tiny_hf_model` (``n_layers``, ``d_model``, ``n_heads``,
    ``n_ctx``, ``sliding_window``, ``init_std``, ``dtype``…).
    """
    from ._load import _bridge_metadata, wrap_model

    hf = tiny_hf_model(arch, seed=seed, **kwargs)
    bridge = wrap_model(hf, char_tokenizer(prepend_bos), name=f"tiny-{arch}")
    _bridge_metadata(bridge, name=f"tiny-{arch}", source="tiny", seed=seed,
                     dtype=str(next(hf.parameters()).dtype), **{k: str(v) for k, v in kwargs.items() if k != "dtype"})
    return bridge
