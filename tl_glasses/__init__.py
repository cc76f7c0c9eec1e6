"""tl_glasses: instruments for "Transformers need glasses! Information over-squashing
in language tasks" (Barbero et al., NeurIPS 2024) on TransformerLens models.

Everything is reachable from this one import::

    import tl_glasses as tg
    model = tg.load_model("gemma-3-270m")
    res = tg.collapse_sweep(model, "ones", lengths=range(8, 512, 32))
    res.df; res.plot()

Heavy modules are imported on first use, so ``import tl_glasses`` is cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily on first access)
_EXPORTS: dict[str, str] = {
    # models
    "load_model": "tl_glasses.models",
    "list_models": "tl_glasses.models",
    "tiny_model": "tl_glasses.models",
    "wrap_model": "tl_glasses.models",
    "model_info": "tl_glasses.models",
    "cache_root": "tl_glasses.models",
    "load_hf": "tl_glasses.models",
    # results and errors
    "Result": "tl_glasses.results",
    "GlassesError": "tl_glasses.errors",
    # other TransformerLens model classes (HookedTransformer, 3.x)
    "as_glasses_model": "tl_glasses.compat",
    # collapse
    "last_token_distance": "tl_glasses.analysis.collapse",
    "collapse_sweep": "tl_glasses.analysis.collapse",
    "LastTokenProbe": "tl_glasses.analysis.collapse",
    "CollapseResult": "tl_glasses.analysis.collapse",
    "noise_floor": "tl_glasses.analysis.collapse",
    "tokenize_items": "tl_glasses.tasks.tokenization",
    "describe_tokenization": "tl_glasses.tasks.tokenization",
    "families": "tl_glasses.tasks.families",
    "list_families": "tl_glasses.tasks.families",
    "list_mitigations": "tl_glasses.interventions",
    "list_metrics": "tl_glasses.analysis.patching",
    "get_family": "tl_glasses.tasks.families",
    # mitigations
    "separators": "tl_glasses.interventions",
    "sliding_window": "tl_glasses.interventions",
    "global_attention": "tl_glasses.interventions",
    "prompt_structure": "tl_glasses.interventions",
    # over-squashing
    "sensitivity": "tl_glasses.analysis.sensitivity",
    "path_bound": "tl_glasses.analysis.paths",
    "depth_profile": "tl_glasses.analysis.paths",
    "bound_vs_sensitivity": "tl_glasses.analysis.oversquashing",
    "copy_study": "tl_glasses.analysis.oversquashing",
    "hint_study": "tl_glasses.analysis.oversquashing",
    # tasks
    "evaluate": "tl_glasses.tasks.evaluate",
    "get_task": "tl_glasses.tasks.generators",
    "list_tasks": "tl_glasses.tasks.generators",
    "TaskResult": "tl_glasses.tasks.evaluate",
    "parse_answer": "tl_glasses.tasks.parsing",
    # patching
    "patch_pair": "tl_glasses.analysis.patching",
    "attribution_check": "tl_glasses.analysis.patching",
    # report (the self-checks: the submodule tg.doctor, tg.doctor.doctor())
    "report": "tl_glasses.viz.report",
    # synthetic lab
    "SyntheticDecoder": "tl_glasses.synthetic",
}

_SUBMODULES = {"models", "tasks", "analysis", "capture", "interventions", "synthetic", "sweeps", "viz", "errors", "results", "typing", "compat", "doctor"}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(_EXPORTS[name])
        value = getattr(mod, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"tl_glasses.{name}")
    raise AttributeError(f"module 'tl_glasses' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
