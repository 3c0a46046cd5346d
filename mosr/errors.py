"""Errors raised by mosr. Every user-facing failure is a subclass of :class:`MosrError`."""

from __future__ import annotations


class MosrError(ValueError):
    """Base class: bad input or configuration, with a message that names the problem."""


class DataError(MosrError):
    """A data file or data set is missing, empty or malformed."""


class DataDirError(DataError):
    """The benchmark data directory cannot be found."""


class ModelError(MosrError):
    """A model cannot be loaded or its architecture is not registered."""


class ChatTemplateError(ModelError):
    """The tokenizer has no chat template but chat formatting was requested."""


class LayerError(MosrError):
    """A layer index or layer specification is out of range or malformed."""


class ConfigError(MosrError):
    """A configuration file or dataclass has unknown keys or bad values."""


class FolderInUseError(MosrError):
    """Another process is writing into the run folder (:func:`mosr.io.folder_lock`)."""
