"""Shape aliases used across tl_glasses (jaxtyping). One place, written once."""
from __future__ import annotations

from typing import Any, Protocol, Union, runtime_checkable

import torch
from jaxtyping import Float, Int

__all__ = [
    "Tokens",
    "BatchTokens",
    "Vector",
    "PositionValues",
    "LayerPositionValues",
    "Pattern",
    "HeadPattern",
    "PromptLike",
    "Model",
]

Tokens = Int[torch.Tensor, "pos"]
BatchTokens = Int[torch.Tensor, "batch pos"]
Vector = Float[torch.Tensor, "d_model"]
PositionValues = Float[torch.Tensor, "pos"]
LayerPositionValues = Float[torch.Tensor, "layer pos"]
Pattern = Float[torch.Tensor, "query_pos key_pos"]
HeadPattern = Float[torch.Tensor, "head query_pos key_pos"]

PromptLike = Union[str, torch.Tensor]


@runtime_checkable
class Model(Protocol):
    """The TransformerLens surface the analysers use (TransformerBridge,
    HookedTransformer from TransformerLens 3.x, the synthetic lab model).

    Structural, like ``transformer_lens.model_protocol.TransformerLensModel``;
    restated here so that importing it never depends on the TransformerLens
    major version installed.
    """

    @property
    def cfg(self) -> Any: ...

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any: ...

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def to_tokens(self, *args: Any, **kwargs: Any) -> Any: ...
