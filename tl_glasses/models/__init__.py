"""Models: embedded GGUF-packaged pretrained models, any HF model, tiny random models."""
from ._cache import cache_root
from ._dtype import model_for_dtype
from ._embedded import EMBEDDED, embedded_names
from ._load import list_models, load_hf, load_model, model_info, resolve_dtype, wrap_model
from ._tiny import TINY_ARCHS, char_tokenizer, tiny_hf_model, tiny_model

__all__ = [
    "EMBEDDED", "TINY_ARCHS", "cache_root", "char_tokenizer", "embedded_names", "list_models",
    "load_hf", "load_model", "model_for_dtype", "model_info", "resolve_dtype", "tiny_hf_model", "tiny_model",
    "wrap_model",
]
