"""Position alignment of two token sequences for patching (see :func:`align_pair`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import GlassesError, UnknownNameError

__all__ = ["Alignment", "align_pair"]


@dataclass(frozen=True)
class Alignment:
    """Which position of ``b`` each position of ``a`` is compared with.

    ``a_positions[i]`` ↔ ``b_positions[i]``. ``shared_prefix`` leading positions are
    aligned from the start (same tokens, same causal context); the rest from the end.
    ``inserted`` is ``(start, length)`` of the block of the longer sequence that the
    shorter one lacks, when the two differ by one contiguous insertion; ``repeated``
    says whether that block repeats the item just before it (the collapse pair ``v*``).
    """

    a_len: int
    b_len: int
    a_positions: tuple[int, ...]
    b_positions: tuple[int, ...]
    rule: str
    shared_prefix: int
    inserted: tuple[int, int] | None = None
    inserted_in: str | None = None
    repeated: bool = False

    def b_of(self, a_pos: int) -> int | None:
        try:
            return self.b_positions[self.a_positions.index(a_pos)]
        except ValueError:
            return None

    @property
    def unmatched_a(self) -> list[int]:
        s = set(self.a_positions)
        return [p for p in range(self.a_len) if p not in s]

    @property
    def unmatched_b(self) -> list[int]:
        s = set(self.b_positions)
        return [p for p in range(self.b_len) if p not in s]

    def describe(self) -> str:
        if self.rule == "identity":
            return f"same length ({self.a_len} tokens): position i of a ↔ position i of b"
        txt = (f"a has {self.a_len} tokens, b {self.b_len}; {self.rule}: the first "
               f"{min(self.shared_prefix, len(self.a_positions))} shared positions from the start, "
               f"the rest from the end (a's last ↔ b's last)")
        if self.inserted is not None:
            s, n = self.inserted
            what = "a repeat of the item before it" if self.repeated else "not a repeat"
            txt += f"; {self.inserted_in} has {n} extra token(s) at {s}..{s + n - 1} ({what}), unmatched"
        return txt

    def to_dict(self) -> dict:
        return dict(a_len=self.a_len, b_len=self.b_len, a_positions=list(self.a_positions),
                    b_positions=list(self.b_positions), rule=self.rule,
                    shared_prefix=self.shared_prefix,
                    inserted=None if self.inserted is None else list(self.inserted),
                    inserted_in=self.inserted_in, repeated=self.repeated)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Alignment":
        ins = d.get("inserted")
        return cls(int(d["a_len"]), int(d["b_len"]), tuple(int(x) for x in d["a_positions"]),
                   tuple(int(x) for x in d["b_positions"]), str(d["rule"]), int(d["shared_prefix"]),
                   None if ins is None else (int(ins[0]), int(ins[1])), d.get("inserted_in"),
                   bool(d.get("repeated", False)))


def _common_prefix(x: list[int], y: list[int]) -> int:
    n = 0
    for u, v in zip(x, y):
        if u != v:
            break
        n += 1
    return n


def _find_insertion(short: list[int], long: list[int]) -> tuple[int, int, bool] | None:
    """If ``long`` is ``short`` with one contiguous block inserted, return (start, length,
    repeated) for the placement that makes the block a repeat of the item before it
    when one exists (otherwise the latest placement)."""
    d = len(long) - len(short)
    if d <= 0:
        return None
    p = _common_prefix(short, long)
    s = _common_prefix(short[::-1], long[::-1])
    if p + s < len(short):
        return None
    lo, hi = max(0, len(short) - s), min(p, len(short))
    best = None
    for k in range(hi, lo - 1, -1):  # latest placement first: "the last item repeated"
        block = long[k:k + d]
        rep = k >= d and long[k - d:k] == block
        if rep:
            return k, d, True
        if best is None:
            best = (k, d, False)
    return best


def align_pair(tokens_a, tokens_b, how: str = "auto") -> Alignment:
    """Align the positions of two token sequences.

    ``how="auto"``: equal lengths → position i ↔ i. Otherwise the shared token prefix
    is aligned from the start (those positions see identical causal context) and every
    later position from the end, so ``a``'s last position meets ``b``'s last; the
    extra tokens of the longer sequence are left unmatched. ``how="end"`` aligns
    everything from the end (the leading tokens of the longer sequence unmatched);
    ``how="start"`` everything from the start.
    """
    ta = [int(t) for t in torch.as_tensor(tokens_a).reshape(-1).tolist()]
    tb = [int(t) for t in torch.as_tensor(tokens_b).reshape(-1).tolist()]
    na, nb = len(ta), len(tb)
    if na == 0 or nb == 0:
        raise GlassesError("cannot align an empty sequence")
    prefix = _common_prefix(ta, tb)
    ins = None
    inserted_in = None
    if nb > na:
        ins, inserted_in = _find_insertion(ta, tb), "b"
    elif na > nb:
        ins, inserted_in = _find_insertion(tb, ta), "a"
    if ins is None:
        inserted_in = None
    if how not in ("auto", "end", "start"):
        raise UnknownNameError("alignment", how, ["auto", "end", "start"])
    if how == "auto" and na == nb:
        pa = tuple(range(na))
        return Alignment(na, nb, pa, pa, "identity", prefix)
    shift = nb - na
    if how == "start":
        m = min(na, nb)
        pa = tuple(range(m))
        return Alignment(na, nb, pa, pa, "from the start", prefix,
                         None if ins is None else ins[:2], inserted_in, bool(ins and ins[2]))
    if how == "end":
        head = 0
        rule = "from the end"
    else:
        head = min(prefix, min(na, nb) - 1)
        if ins is not None:  # the inserted block starts the end-aligned part
            head = min(head, ins[0])
        rule = "shared prefix from the start, the rest from the end"
    pairs = [(p, p) for p in range(head)]
    for p in range(head, na):
        q = p + shift
        if head <= q < nb:
            pairs.append((p, q))
    pa = tuple(p for p, _ in pairs)
    pb = tuple(q for _, q in pairs)
    return Alignment(na, nb, pa, pb, rule, prefix, None if ins is None else ins[:2], inserted_in,
                     bool(ins and ins[2]))


