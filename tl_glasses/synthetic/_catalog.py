"""Names of the theory checks and the claims they test (light: imports nothing heavy,
so the command line can list them without loading TransformerLens)."""
from __future__ import annotations

CATALOG: dict[str, str] = {
    "softmax-decay": "Lemma B.1",
    "tv-decay": "Lemma B.2 (Fig. 9), Prop. B.4",
    "fig8": "Thm B.3, Fig. 8 (sinusoidal, q/k/v ~ N(0, 1/d))",
    "fig10": "Thm B.3, Fig. 10 (every PE, q/k/v ~ N(0, 1))",
    "counting-ratio": "Prop. B.9",
    "counting-precision": "Cor. B.10",
    "depth-limit": "Props. 5.2/B.8, Lemmas B.6/B.7",
}
