"""``ecg-dan import-weights authors FILE --out pretrain.ckpt``: the authors' released PTB-XL
pretraining (cherise215/LLM-ECG-Dual-Attention,
``pretrained_weights/model/ECG2Text/checkpoint_best_loss-v2.ckpt``) as an ecg-dan
pretraining checkpoint, so that finetuning can start from their real PTB-XL pretraining.

Their file is a Lightning checkpoint whose ``state_dict`` holds ``network.encoder.*`` /
``network.decoder.*`` (or ``encoder.*`` / ``decoder.*``) and whose ``hyper_parameters`` hold
their ``argparse.Namespace``. It is read without running anything from it: a restricted
unpickler builds tensors and plain containers only; every other class it names (their
Namespace, Lightning's objects) becomes an inert placeholder that keeps the plain data of
its state and is dropped, and the import says which were dropped.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import hashlib
import os
import pickle
import types
import zipfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from data_modules.atomic import atomic_path
from ecg_dan.checkpoints import CheckpointError
from ecg_dan.config import ModelConfig, PretrainConfig, pretrain_objective
from ecg_dan.log import get_logger
from ecg_dan.models.authors_keys import PARTS, from_authors
from ecg_dan.models.ecgdan import ECGDAN

log = get_logger(__name__)

AUTHORS_TEXT_MODEL = "emilyalsentzer/Bio_ClinicalBERT"  # their text encoder (768-d)
_TENSOR_REBUILD = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                   "_rebuild_parameter", "_rebuild_parameter_with_state")
_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool",
             "str", "bytes", "bytearray", "slice", "range")


class Dropped:
    """Stand-in for a class the restricted unpickler does not build. Nothing of the original
    runs; the plain data it was given (constructor arguments, state, items) is kept."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Dropped:
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items = args, None, {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.items[len(self.items)] = value

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)

    def __repr__(self) -> str:
        return f"<dropped {self.qualname}>"


def _allowed(module: str, name: str) -> Any:
    """The object a pickle may name, or None: tensor rebuilders, dtypes, plain containers."""
    if module == "torch._utils" and name in _TENSOR_REBUILD:
        return getattr(torch._utils, name)
    if module == "torch" and name in ("Size", "device"):
        return getattr(torch, name)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
        return getattr(builtins, name)
    if module == "_codecs" and name == "encode":  # how protocol 2 writes bytes
        return codecs.encode
    return None


def _restricted_pickle(dropped: set[str]) -> types.SimpleNamespace:
    """A pickle module for ``torch.load`` whose unpickler builds only what :func:`_allowed`
    returns (torch resolves its storages itself) and a :class:`Dropped` for anything else."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            obj = _allowed(module, name)
            if obj is not None:
                return obj
            qualname = f"{module}.{name}"
            dropped.add(qualname)
            return type(f"Dropped_{name}", (Dropped,), {"qualname": qualname})

    def load(file, **kwargs):  # torch.load's legacy path; refused before it is reached
        return Unpickler(file, **kwargs).load()

    return types.SimpleNamespace(Unpickler=Unpickler, load=load, __name__="restricted_pickle")


def read_foreign_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], list[str]]:
    """A checkpoint written by other code, as tensors and plain data, and the sorted names
    of the classes it held that were replaced by :class:`Dropped` placeholders."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch checkpoint (torch.save's zip format)")
    dropped: set[str] = set()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_restricted_pickle(dropped))
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint (found a {type(ckpt).__name__})")
    return ckpt, sorted(dropped)


def _authors_parts(state: dict[str, Any], path: Path) -> dict[str, dict[str, Tensor]]:
    """Their encoder and decoder tensors, prefixes stripped (the two layouts their own
    loader accepts: ``network.<part>.*``, else ``<part>.*``)."""
    for prefix in ("network.", ""):
        parts = {part: {k[len(prefix) + len(part) + 1:]: v for k, v in state.items()
                        if k.startswith(f"{prefix}{part}.") and isinstance(v, Tensor)}
                 for part in PARTS}
        if all(parts.values()):
            return parts
    raise CheckpointError(f"{path}: no network.encoder.* / network.decoder.* (or encoder.* / "
                          "decoder.*) weights in its state_dict; is it the authors' "
                          "ECGAttentionAE pretraining checkpoint?")


def _model_config(encoder: dict[str, Tensor]) -> ModelConfig:
    """Their architecture flags, read off the weights present: the ablations lack a branch."""
    pool = encoder.get("attention.attention_pool_1.1.weight")
    return replace(ModelConfig(),
                   temporal_attention=any(k.startswith("attention.time_mha.") for k in encoder),
                   cross_lead_attention=any(k.startswith("attention.lead_mha.")
                                            for k in encoder),
                   latent_dim=2 * pool.shape[0] if pool is not None else ModelConfig.latent_dim)


def _objective(state: dict[str, Any], hparams: Any) -> dict[str, Any]:
    """Their pretraining strategy in ecg-dan's terms (``pretrain_objective``): reconstruction
    always; cosine alignment when the checkpoint holds their ECG projector; the
    classification term when it holds their classifier; the text recipe from their
    ``--ECG2RawText`` flag (read from the dropped Namespace's plain state), else the
    structured SCP text of ``--ECG2Text``."""
    if isinstance(hparams, Dropped):  # a dict subclass of their Lightning version
        hparams = hparams.items
    args = hparams.get("args") if isinstance(hparams, dict) else None
    flags = args.state if isinstance(args, Dropped) and isinstance(args.state, dict) else {}
    aligned = any(k.startswith("ecg_projector.") for k in state)
    classified = any(k.startswith("classifier.") for k in state)
    p = asdict(PretrainConfig())
    p.update(w_recon=1.0, w_cls=1.0 if classified else 0.0, w_align=1.0 if aligned else 0.0,
             alignment="cosine" if aligned else "none",
             text_recipe="report_raw" if flags.get("ECG2RawText") else "scp_structured")
    return pretrain_objective(p)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_authors(src: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write ``out``, an ecg-dan pretraining checkpoint holding the authors' encoder and
    decoder from ``src``; returns its ``ecg_dan`` record (``imported`` says from what)."""
    src, out = Path(src), Path(out)
    ckpt, dropped = read_foreign_checkpoint(src)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{src}: no state_dict (not a Lightning checkpoint)")
    theirs = _authors_parts(state, src)
    cfg = _model_config(theirs["encoder"])
    net = ECGDAN(cfg)
    weights = {}
    for part in PARTS:
        try:
            weights[part] = from_authors(getattr(net, part).state_dict(), theirs[part], part,
                                         cfg.n_leads)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{src}: the authors' {part} does not map onto ECG-DAN "
                                  f"({cfg}): {e.args[0]}") from None
        getattr(net, part).load_state_dict(weights[part], strict=True)  # the final check
    meta = {
        "kind": "pretrain",
        "model_config": asdict(cfg),
        "objective": _objective(state, ckpt.get("hyper_parameters")),
        "text_model": AUTHORS_TEXT_MODEL,
        "config": None,
        "encoder": weights["encoder"],
        "decoder": weights["decoder"],
        "imported": {"from": "authors", "file": src.name, "sha256": sha256_file(src),
                     "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"),
                     "dropped": dropped},
    }
    with atomic_path(out) as tmp:
        torch.save({"ecg_dan": meta}, tmp)
    log.info(f"{out}: the authors' encoder and decoder from {src.name} "
             f"(sha256 {meta['imported']['sha256'][:12]}..., epoch {ckpt.get('epoch')}); "
             f"objective {meta['objective']}; not built from the file: "
             f"{', '.join(dropped) or 'nothing'}")
    return meta
