"""Prompt-side mitigations: separators (Fig. 5c,d) and prompt structure (App. C.5)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import GlassesError, UnknownNameError
from ..tasks import prompts
from ._base import Mitigation

__all__ = ["Separators", "PromptStructure", "separators", "prompt_structure", "STRUCTURES"]


@dataclass(frozen=True, repr=False)
class Separators(Mitigation):
    """Insert ``sep`` after every ``every``-th item of the repeated sequence
    (``"111,111,11"``): the paper's "simple solution" to collapse (Sec. 4, Fig. 5d)."""

    every: int = 3
    sep: str = ","
    name = "separators"

    def __post_init__(self):
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise GlassesError(f"separators(every=...) must be a positive integer, got {self.every!r}")
        if not isinstance(self.sep, str) or not self.sep:
            raise GlassesError("separators(sep=...) must be a non-empty string such as ','")

    def transform(self, spec):
        return replace(spec, group=(self.every, self.sep))

    @property
    def label(self) -> str:
        return f"separators:{self.every}" + ("" if self.sep == "," else f":{self.sep}")


# App. C.5: Type 1 asks the question first (then the format, then the sequence);
# Type 2 gives the answer format first and asks the question last, right before the
# sequence. "sequence_first" is the copying prompt of App. C.1, where the question
# comes after the sequence.
STRUCTURES = {
    "question_first": prompts.COPY_TYPE1,
    "question_last": prompts.COPY_TYPE2,
    "sequence_first": prompts.COPY,
}
_ALIASES = {"type1": "question_first", "type2": "question_last"}


@dataclass(frozen=True, repr=False)
class PromptStructure(Mitigation):
    """Reorder the copying prompt (App. C.5): ``"question_first"`` is the paper's
    Type 1 prompt, ``"question_last"`` its Type 2, ``"sequence_first"`` the App. C.1
    copying prompt (question after the sequence). ``template=`` uses your own text
    (with a ``{seq}`` slot) for any family."""

    kind: str = "question_first"
    template: str | None = None
    name = "prompt_structure"

    def __post_init__(self):
        if self.template is not None:
            if self.template.count("{seq}") != 1:
                raise GlassesError("prompt_structure(template=...) needs exactly one '{seq}' slot")
            return
        kind = _ALIASES.get(self.kind, self.kind)
        if kind not in STRUCTURES:
            raise UnknownNameError("prompt structure", self.kind, list(STRUCTURES) + list(_ALIASES))
        object.__setattr__(self, "kind", kind)

    def transform(self, spec):
        if self.template is not None:
            return replace(spec, template=self.template)
        if spec.task != "copy":
            raise GlassesError(
                f"prompt_structure({self.kind!r}) reorders the paper's copying prompt (App. C.5); this "
                f"prompt is a {spec.task or 'user'} prompt. Use the 'copy_last' family, or give your own "
                f"text: prompt_structure(template='... {{seq}} ...')"
            )
        return replace(spec, template=STRUCTURES[self.kind])

    @property
    def label(self) -> str:
        return f"prompt_structure:{self.kind if self.template is None else 'custom'}"


def separators(every: int = 3, sep: str = ",") -> Separators:
    """Insert ``sep`` after every ``every`` items of the sequence (paper Fig. 5d)."""
    return Separators(every, sep)


def prompt_structure(kind: str = "question_first", *, template: str | None = None) -> PromptStructure:
    """The copying prompt with the question first (paper's Type 1) or last (Type 2),
    App. C.5; or your own ``template``."""
    return PromptStructure(kind, template)
