"""The synthetic lab (App. C.3, C.4): ``SyntheticDecoder``, a small untrained
Transformer with a choice of positional encoding, built as a TransformerLens
``HookedRootModule`` so every tl_glasses analyser runs on it; and the numerical
checks of the paper's theory in :mod:`tl_glasses.synthetic.theory`."""
from ._model import CHAR_VOCAB, SyntheticConfig, SyntheticDecoder
from ._pe import PE_NAMES, alibi_bias, alibi_slopes, apply_rope, rope_cos_sin, sinusoidal_table

__all__ = [
    "SyntheticDecoder",
    "SyntheticConfig",
    "CHAR_VOCAB",
    "PE_NAMES",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "rope_cos_sin",
    "sinusoidal_table",
]
