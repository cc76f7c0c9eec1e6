"""Test doubles for the task suites: a scripted 'model' that writes a fixed reply, and a
tiny model whose tokenizer merges '1'+'1' (to test the tokenisation guard)."""
from __future__ import annotations

import string
from types import SimpleNamespace

import torch


class ScriptedModel(torch.nn.Module):
    """Replies ``reply`` (then EOS) to every prompt, one character token at a time, with
    the TransformerLens surface evaluate() uses (``to_tokens``, ``tokenizer``, ``cfg``,
    ``forward(tokens, return_type=...)``). It has no key/value cache and no 4-D masks,
    so scoring and generation take their recompute paths."""

    def __init__(self, reply: str):
        super().__init__()
        from tl_glasses.models import char_tokenizer

        self.tokenizer = char_tokenizer()
        self.vocab = len(self.tokenizer.get_vocab())
        self.cfg = SimpleNamespace(n_ctx=100_000, d_vocab=self.vocab, model_name="scripted", n_layers=1)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.reply = self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        self.calls = 0
        self.eval()

    def to_tokens(self, text, prepend_bos=None, truncate=False, **kw):
        ids = self.tokenizer(text, add_special_tokens=prepend_bos is not False)["input_ids"]
        return torch.tensor([ids])

    def _next(self, seq: list[int]) -> int:
        for k in range(min(len(seq), len(self.reply) - 1), -1, -1):
            if k == 0 or seq[-k:] == self.reply[:k]:
                return self.reply[k]
        return self.reply[0]

    def forward(self, tokens, return_type="logits", logits_to_keep=None, **kw):
        if return_type == "logits_and_cache":
            raise NotImplementedError("no cache")
        self.calls += 1
        B, L = tokens.shape
        if logits_to_keep is None:
            keep = list(range(L))
        elif isinstance(logits_to_keep, int):
            keep = list(range(L - logits_to_keep, L))
        else:
            keep = [int(p) for p in logits_to_keep]
        logits = torch.full((B, len(keep), self.vocab), -10.0)
        for b in range(B):
            seq = tokens[b].tolist()
            for j, p in enumerate(keep):
                logits[b, j, self._next(seq[: p + 1])] = 10.0
        return logits


def merging_model():
    """A tiny random Llama bridge whose BPE tokenizer merges '1'+'1' into one token."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    import tl_glasses as tg
    from tl_glasses.models import tiny_hf_model

    chars = list(dict.fromkeys(string.printable + "\u2018\u2019"))
    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + chars + ["11"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("1", "1")], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        name_or_path="tests/merging", add_bos_token=True,
    )
    hf = tiny_hf_model("llama", vocab_size=len(vocab))
    return tg.wrap_model(hf, fast, name="tiny-merging")


def reference_scores(hf, tokens: torch.Tensor, cands: list[list[int]], mask: torch.Tensor) -> torch.Tensor:
    """log P(candidate) + log P(no digit after it), from the plain transformers model,
    one full forward per candidate, in float64 from its logits."""
    out = []
    L = tokens.shape[-1]
    with torch.no_grad():
        for c in cands:
            lg = hf(torch.tensor([tokens.tolist() + list(c)])).logits[0].double()
            lp = sum(float(torch.log_softmax(lg[L - 1 + d], -1)[c[d]]) for d in range(len(c)))
            last = lg[L - 1 + len(c)]
            lp += float(torch.logsumexp(last.masked_fill(mask, float("-inf")), -1) - torch.logsumexp(last, -1))
            out.append(lp)
    return torch.tensor(out, dtype=torch.float64)
