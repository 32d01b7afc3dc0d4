"""The model path grammar of the inference endpoints: `[bundle:/]org/model[:profile]`.

Model ids contain slashes (`org/model`), so the path segment after
`/v1/encode/` is the whole model path. A leading `bundle:/` pins a bundle; a
trailing `:profile` picks a profile. A profile name never contains a slash,
which is what tells `org/model:profile` apart from a colon inside the id
(there is none in a valid id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mesh.errors import ErrorCode, MeshError

# One id segment: Hugging Face's repo-name alphabet. "." and ".." are refused
# separately so a model id can never look like a relative path.
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
# Bundle and profile names: the same alphabet, no slash.
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
BUNDLE_SEPARATOR = ":/"
PROFILE_SEPARATOR = ":"


@dataclass(frozen=True, slots=True)
class ModelPath:
    """A parsed model path. Parsing checks syntax only; the catalog checks existence."""

    model_id: str
    """The model id as written (case preserved), e.g. `BAAI/bge-m3`."""
    bundle: str = ""
    """Bundle override from a `bundle:/` prefix; "" when the catalog chooses."""
    profile: str = ""
    """Profile from a `:profile` suffix; "" when none was given."""

    def __str__(self) -> str:
        text = self.model_id
        if self.bundle:
            text = f"{self.bundle}{BUNDLE_SEPARATOR}{text}"
        if self.profile:
            text = f"{text}{PROFILE_SEPARATOR}{self.profile}"
        return text


def _invalid(text: str, why: str) -> MeshError:
    return MeshError(ErrorCode.INVALID_INPUT, f"invalid model path {text!r}: {why}", field="model")


def is_valid_model_id(model_id: str) -> bool:
    """True when `model_id` is one or more non-empty `/`-separated id segments."""
    if not model_id:
        return False
    for segment in model_id.split("/"):
        if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
            return False
    return True


def is_valid_name(name: str) -> bool:
    """True for a valid bundle or profile name."""
    return bool(_NAME.fullmatch(name))


def parse_model_path(text: str) -> ModelPath:
    """Parse `[bundle:/]org/model[:profile]`.

    Raises MeshError(INVALID_INPUT, field="model") for an empty or malformed
    path: an empty bundle, id segment or profile, whitespace, a second colon,
    or characters outside `[A-Za-z0-9_.-/]`.
    """
    if not text:
        raise _invalid(text, "empty")
    rest = text
    bundle = ""
    if BUNDLE_SEPARATOR in rest:
        bundle, rest = rest.split(BUNDLE_SEPARATOR, 1)
        if not is_valid_name(bundle):
            raise _invalid(text, "bundle override must be a name before ':/'")
    profile = ""
    if PROFILE_SEPARATOR in rest:
        rest, profile = rest.split(PROFILE_SEPARATOR, 1)
        if not is_valid_name(profile):
            raise _invalid(text, "profile after ':' must be a single name")
    if not is_valid_model_id(rest):
        raise _invalid(text, "model id must be '/'-separated segments of [A-Za-z0-9_.-]")
    return ModelPath(model_id=rest, bundle=bundle, profile=profile)
