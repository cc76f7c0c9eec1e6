"""One family of errors, each carrying what went wrong *and* what to do about it."""
from __future__ import annotations

__all__ = [
    "GlassesError",
    "UnknownNameError",
    "ModelNotAvailableError",
    "TokenizationError",
    "ContextLengthError",
    "HookError",
    "NumericalError",
    "ResultsMismatchError",
    "CorruptResultsError",
    "MemoryBudgetError",
]


class GlassesError(ValueError):
    """Base class of every error tl_glasses raises on purpose.

    Subclasses ``ValueError`` so that code catching bad-input errors keeps working.
    """


class UnknownNameError(GlassesError, KeyError):
    """A name (model, family, task, mitigation, metric…) that is not registered."""

    def __init__(self, kind: str, name: object, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, list(known)
        plural = kind[:-1] + "ies" if kind.endswith("y") and kind[-2:-1] not in "aeiou" else kind + "s"
        super().__init__(
            f"unknown {kind} {name!r}; known {plural}: {', '.join(map(repr, self.known))}"
        )

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class ModelNotAvailableError(GlassesError):
    """The requested model cannot be loaded here (not installed, offline…)."""


class TokenizationError(GlassesError):
    """The tokenizer does not produce the items a measurement counts."""


class ContextLengthError(GlassesError):
    """A sequence is longer than the model's context."""


class HookError(GlassesError):
    """A hook the analyser needs is missing, or an intervention had no effect."""


class NumericalError(GlassesError):
    """NaN/Inf appeared in an activation, or a result is below the noise floor."""


class ResultsMismatchError(GlassesError):
    """A results directory was written by a different configuration."""


class CorruptResultsError(GlassesError):
    """A results or cache file is truncated or corrupt."""


class MemoryBudgetError(GlassesError):
    """The estimated memory of a run exceeds what the machine has."""
