"""Datasets and DataModules over small contract-conformant HDF5 caches written here."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from data_modules.cache import CacheError
from data_modules.errors import DataError
from data_modules.loading.datasets import H5ECGDataset, PTBXLDataset, UKBDataset, raw_loader
from data_modules.loading.ptbxl_datamodule import PTBXLDataModule
from data_modules.loading.samplers import EventStratifiedBatchSampler
from data_modules.loading.transforms import LeadMasker, finish_batch, pad_beat, zscore_leads
from data_modules.loading.ukb_datamodule import UKBDataModule, make_ukb_splits
from data_modules.protocol.splits import load_splits, save_splits
from data_modules.signal.leads import PAD
from data_modules.sources.ukb import select_cohort

N_PTBXL = 80
N_UKB = 240


def _finished(loader) -> list[dict[str, torch.Tensor]]:
    """A loader's batches as the model sees them (what on_after_batch_transfer does)."""
    return [finish_batch(b) for b in loader]


def _write_root(f: h5py.File, kind: str, n: int, complete: bool = True) -> None:
    f.attrs["schema_version"] = 1
    f.attrs["kind"] = kind
    f.attrs["build_config"] = json.dumps({"source": "test"})
    f.attrs["n_records"] = n
    sk = f.create_group("skipped")
    sk.create_dataset("id", data=np.array(["x1"], dtype=object), dtype=h5py.string_dtype())
    sk.create_dataset("reason", data=np.array(["test"], dtype=object), dtype=h5py.string_dtype())
    if complete:
        f.attrs["complete"] = True  # set last, as the contract says


def write_ptbxl_cache(path: Path, n: int = N_PTBXL, seed: int = 0, complete: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    s = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        median = rng.normal(size=(n, 12, 600)).astype(np.float32) * 0.3 + 0.1
        median[3, 5] = 0.0  # an all-zero lead
        f.create_dataset("median", data=median)
        f.create_dataset("median_clean", data=(median * 0.9 + 0.05).astype(np.float32))
        f.create_dataset("ecg_id", data=np.arange(1, n + 1, dtype=np.int64))
        f.create_dataset("patient_id", data=np.arange(n, dtype=np.int64) + 1000)
        f.create_dataset("age", data=rng.uniform(20, 90, n).astype(np.float32))
        f.create_dataset("sex", data=rng.integers(0, 2, n).astype(np.int8))
        f.create_dataset("strat_fold", data=(np.arange(n) % 10 + 1).astype(np.int8))
        f.create_dataset("validated_by_human", data=(np.arange(n) % 3 != 0))
        for flag in ("baseline_drift", "static_noise", "burst_noise", "electrodes_problems",
                     "extra_beats", "pacemaker"):
            f.create_dataset(flag, data=np.zeros(n, dtype=bool))
        f.create_dataset("report", data=np.array(["sinus rhythm"] * n, dtype=object), dtype=s)
        f.create_dataset("scp_codes", data=np.array(['{"NORM": 100.0}'] * n, dtype=object),
                         dtype=s)
        sc = np.zeros((n, 5), dtype=np.float32)
        sc[np.arange(n), np.arange(n) % 5] = 1
        f.create_dataset("superclass", data=sc)
        _write_root(f, "ptbxl", n, complete)
    return path


def write_ukb_cache(path: Path, n: int = N_UKB, seed: int = 0, complete: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("median", data=(rng.normal(size=(n, 12, 600)) * 0.4).astype(np.float32))
        f.create_dataset("eid", data=np.arange(n, dtype=np.int64) * 7 + 1000001)
        days = rng.uniform(30, 2500, n).astype(np.float32)
        t = f.create_dataset("time", data=days / 30 + 1)
        t.attrs["time_unit"] = "months"
        f.create_dataset("time_days", data=days)
        event = np.zeros(n, dtype=np.int8)
        event[::8] = 1  # 30 events in 240
        f.create_dataset("event", data=event)
        f.create_dataset("cohort_hyp", data=np.arange(n) % 4 != 3)  # 180 rows, 23 events
        f.create_dataset("cohort_mi", data=np.arange(n) < 100)
        f.create_dataset("age", data=rng.uniform(45, 80, n).astype(np.float32))
        f.create_dataset("sex", data=rng.integers(0, 2, n).astype(np.int8))
        f.create_dataset("ecg_date", data=np.array(["2015-01-01"] * n, dtype=object),
                         dtype=h5py.string_dtype())
        m = f.create_dataset("measurements", data=rng.normal(size=(n, 3)).astype(np.float32))
        m.attrs["measurement_names"] = ["VentricularRate", "QRSDuration", "QTInterval"]
        _write_root(f, "ukb", n, complete)
    return path


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Masks derive from the global torch seed (as under seed_everything): pin it."""
    torch.manual_seed(1234)


@pytest.fixture(scope="module")
def ptbxl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ptbxl_cache(tmp_path_factory.mktemp("ptbxl") / "ptbxl.h5")


@pytest.fixture(scope="module")
def ukb_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ukb_cache(tmp_path_factory.mktemp("ukb") / "ukb.h5")


# --------------------------------------------------------------------------- datasets
def test_ptbxl_dataset_keys_shapes_dtypes_and_values(ptbxl_cache: Path) -> None:
    text = np.random.default_rng(1).normal(size=(N_PTBXL, 16)).astype(np.float32)
    ds = PTBXLDataset(ptbxl_cache, indices=[3, 10, 20], text=text)
    assert len(ds) == 3
    s = ds[0]
    assert set(s) == {"x", "target", "lead_mask", "superclass", "index", "text"}
    assert s["x"].shape == (12, 608) and s["x"].dtype == torch.float32
    assert s["target"].shape == (12, 600) and s["target"].dtype == torch.float32
    assert s["lead_mask"].shape == (12,) and s["lead_mask"].dtype == torch.bool
    assert s["superclass"].shape == (5,) and s["superclass"].dtype == torch.float32
    assert s["index"].dtype == torch.int64 and int(s["index"]) == 3
    assert s["text"].shape == (16,) and s["text"].dtype == torch.float32
    with h5py.File(ptbxl_cache) as f:
        median, clean, sc = f["median"][3], f["median_clean"][3], f["superclass"][3]
    np.testing.assert_allclose(s["x"].numpy(), pad_beat(zscore_leads(median)), atol=1e-6)
    np.testing.assert_allclose(s["target"].numpy(), zscore_leads(clean), atol=1e-6)
    np.testing.assert_array_equal(s["superclass"].numpy(), sc)
    np.testing.assert_array_equal(s["text"].numpy(), text[3])
    assert s["lead_mask"].all()  # no masker: nothing masked
    assert (s["x"][5] == 0).all()  # the all-zero lead of row 3 stays 0, no NaN
    assert torch.isfinite(s["x"]).all()
    with pytest.raises(ValueError, match="aligned"):
        PTBXLDataset(ptbxl_cache, text=text[:-1])


def test_ptbxl_train_masking_masks_x_not_target(ptbxl_cache: Path) -> None:
    ds = PTBXLDataset(ptbxl_cache, masker=LeadMasker(p_apply=0.5), seed=0)
    samples = [ds[i] for i in range(len(ds))]
    masked = [s for s in samples if not s["lead_mask"].all()]
    assert 6 <= len(masked) <= 40  # expected 20 of 80 (p_apply 0.5 x P(subset != all) 0.5)
    for s in masked:
        dropped = ~s["lead_mask"]
        assert (s["x"][dropped] == 0).all()
        if int(s["index"]) != 3:  # row 3 has a flat lead by construction
            assert (s["target"][dropped].abs().sum(dim=-1) > 0).all()  # target is unmasked


def test_dataset_does_not_open_file_in_init_and_pickles(ptbxl_cache: Path) -> None:
    for max_bytes in (None, 0):  # in memory / streaming
        ds = PTBXLDataset(ptbxl_cache, masker=LeadMasker(), max_bytes=max_bytes)
        assert ds.store.in_memory == (max_bytes is None)
        assert ds.store._file is None and not ds.store._arrays
        clone = pickle.loads(pickle.dumps(ds))
        assert clone.store._file is None and len(clone) == N_PTBXL
        _ = ds[0]
        if max_bytes is None:  # loaded once, the handle closed again
            assert ds.store._file is None and set(ds.store._arrays) == {"median", "median_clean"}
        else:
            assert ds.store._file is not None and ds.store._file.id.valid
        clone = pickle.loads(pickle.dumps(ds))  # neither an open handle nor the arrays travel
        assert clone.store._file is None and not clone.store._arrays
        np.testing.assert_array_equal(clone[1]["target"].numpy(), ds[1]["target"].numpy())
        ds.close()
        assert ds.store._file is None
        assert ds[2]["x"].shape == (12, 608)  # re-opens on demand


def test_ukb_dataset_keys(ukb_cache: Path) -> None:
    ds = UKBDataset(ukb_cache, indices=np.array([0, 5]))
    s = ds[0]
    assert set(s) == {"x", "target", "lead_mask", "time", "event", "eid", "index"}
    assert s["x"].shape == (12, 608) and s["x"].dtype == torch.float32
    assert s["time"].dtype == torch.float32 and s["time"].shape == ()
    assert s["event"].dtype == torch.float32 and float(s["event"]) == 1.0
    assert s["eid"].dtype == torch.int64 and int(s["eid"]) == 1000001
    assert int(ds[1]["index"]) == 5 and float(ds[1]["event"]) == 0.0
    assert ds.time_unit == "months"
    with pytest.raises(IndexError):
        UKBDataset(ukb_cache, indices=[N_UKB])


def test_generic_dataset_reads_either_kind(ptbxl_cache: Path, ukb_cache: Path) -> None:
    for path in (ptbxl_cache, ukb_cache):
        ds = H5ECGDataset(path, indices=[1])
        assert set(ds[0]) == {"x", "target", "lead_mask", "index"}
        assert ds[0]["x"].shape == (12, 608)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: f.attrs.__delitem__("complete"), "incomplete"),
        (lambda f: f.attrs.__setitem__("complete", False), "incomplete"),
        (lambda f: f.attrs.__setitem__("schema_version", 99), "schema_version 99"),
        (lambda f: f.attrs.__setitem__("kind", "ukb"),
             r"bad.h5 is a UK Biobank cache \(kind 'ukb'\); expected a PTB-XL cache"),
        (lambda f: f.__delitem__("median_clean"), "median_clean"),
    ],
)
def test_refuses_bad_caches(tmp_path: Path, mutate, match: str) -> None:
    path = write_ptbxl_cache(tmp_path / "bad.h5", n=12)
    with h5py.File(path, "r+") as f:
        mutate(f)
    with pytest.raises(CacheError, match=match) as err:
        PTBXLDataset(path)
    assert str(path) in str(err.value)
    with pytest.raises(CacheError):
        PTBXLDataModule(path)


def test_refuses_cache_written_without_complete(tmp_path: Path) -> None:
    path = write_ukb_cache(tmp_path / "partial.h5", n=16, complete=False)
    with pytest.raises(CacheError, match="incomplete"):
        UKBDataset(path)


def test_workers_do_not_share_the_parents_mask_stream(ptbxl_cache: Path) -> None:
    ds = PTBXLDataset(ptbxl_cache, masker=LeadMasker(p_apply=1.0))
    _ = ds[0]  # the parent creates its generator (and opens the file) before forking
    loader = raw_loader(ds, batch_size=1, num_workers=2)
    masks = torch.cat([b["lead_mask"] for b in loader]).numpy()
    # worker 0 produced items 0, 2, 4, ...; worker 1 items 1, 3, 5, ...
    assert not np.array_equal(masks[0::2], masks[1::2])


# --------------------------------------------------------------------------- PTB-XL DM
def test_ptbxl_datamodule_split_and_batches(ptbxl_cache: Path) -> None:
    text = np.ones((N_PTBXL, 8), dtype=np.float32)
    dm = PTBXLDataModule(ptbxl_cache, batch_size=16, text_embeddings=text, seed=72)
    dm.setup("fit")
    assert (dm.n_train, dm.n_val, dm.n_test) == (64, 8, 8)
    assert dm.text_dim == 8 and dm.steps_per_epoch == 4
    np.testing.assert_array_equal(dm.test_indices, np.arange(9, N_PTBXL, 10))
    batches = _finished(dm.train_dataloader())
    assert len(batches) == 4
    b = batches[0]
    assert b["x"].shape == (16, 12, 608) and b["target"].shape == (16, 12, 600)
    assert b["lead_mask"].shape == (16, 12) and b["superclass"].shape == (16, 5)
    assert b["text"].shape == (16, 8) and b["index"].dtype == torch.int64
    rows = torch.cat([bb["index"] for bb in batches]).numpy()
    assert sorted(rows) == sorted(dm.train_indices)  # shuffled, each row once
    assert not np.array_equal(rows, np.sort(rows))
    val = list(dm.val_dataloader())
    assert all(vb["lead_mask"].all() for vb in val)
    assert torch.cat([vb["index"] for vb in val]).tolist() == dm.val_indices.tolist()
    test_rows = torch.cat([tb["index"] for tb in dm.predict_dataloader()]).tolist()
    assert test_rows == dm.test_indices.tolist()


def test_ptbxl_datamodule_drop_last_and_validated_only(ptbxl_cache: Path) -> None:
    dm = PTBXLDataModule(ptbxl_cache, batch_size=24, validated_only=True)
    assert dm.n_train == sum(1 for i in range(N_PTBXL) if i % 10 < 8 and i % 3 != 0)
    assert all(i % 3 != 0 for i in dm.train_indices)
    sizes = [len(b["index"]) for b in dm.train_dataloader()]
    assert sizes == [24] * (dm.n_train // 24)
    sizes = [len(b["index"]) for b in dm.val_dataloader()]
    assert sum(sizes) == dm.n_val  # nothing dropped in evaluation
    with pytest.raises(ValueError, match="no training batches"):
        PTBXLDataModule(ptbxl_cache, batch_size=1000).train_dataloader()


def test_ptbxl_loader_with_workers_is_reproducible(ptbxl_cache: Path) -> None:
    def one_pass(seed: int) -> tuple[np.ndarray, np.ndarray]:
        dm = PTBXLDataModule(ptbxl_cache, batch_size=16, num_workers=2, seed=seed)
        loader = dm.train_dataloader()
        assert loader.persistent_workers
        batches = list(loader)
        idx = torch.cat([b["index"] for b in batches]).numpy()
        masks = torch.cat([b["lead_mask"] for b in batches]).numpy()
        return idx, masks

    idx_a, masks_a = one_pass(72)
    idx_b, masks_b = one_pass(72)
    assert len(set(idx_a.tolist())) == 64  # the 2 workers did not duplicate rows
    np.testing.assert_array_equal(idx_a, idx_b)
    np.testing.assert_array_equal(masks_a, masks_b)
    assert (~masks_a.all(axis=1)).sum() > 0  # some samples masked
    idx_c, _ = one_pass(73)
    assert not np.array_equal(idx_a, idx_c)


# --------------------------------------------------------------------------- UKB DM
@pytest.fixture(scope="module")
def hyp_splits(ukb_cache: Path):
    return make_ukb_splits(ukb_cache, "hyp", seeds=(42, 2021))


def test_cohort_rows_and_splits(ukb_cache: Path, hyp_splits, tmp_path: Path) -> None:
    rows = select_cohort(ukb_cache, "hyp")
    assert rows.tolist() == [i for i in range(N_UKB) if i % 4 != 3]
    assert len(select_cohort(ukb_cache, "mi")) == 100
    assert len(select_cohort(ukb_cache, "all")) == N_UKB
    assert len(hyp_splits) == 4
    for sp in hyp_splits:
        allr = np.concatenate([sp.train_idx, sp.val_idx, sp.test_idx])
        assert sorted(allr.tolist()) == rows.tolist()
        np.testing.assert_array_equal(sp.test_eid, sp.test_idx * 7 + 1000001)
    path = save_splits(hyp_splits, tmp_path / "splits.json")
    assert load_splits(path) == hyp_splits


def test_ukb_datamodule_train_batches_stratified_and_masked(ukb_cache: Path, hyp_splits) -> None:
    sp = hyp_splits[0]
    dm = UKBDataModule(ukb_cache, "hyp", sp, batch_size=32, seed=42)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.batch_sampler, EventStratifiedBatchSampler)
    batches = _finished(loader)
    assert len(batches) == len(loader.batch_sampler)
    n_train, n_ev = dm.n_train, int(dm.labels("train")["event"].sum())
    seen = []
    for b in batches:
        assert set(b) == {"x", "target", "lead_mask", "time", "event", "eid", "index"}
        B = b["x"].shape[0]
        assert b["x"].shape == (B, 12, 608) and b["target"].shape == (B, 12, 600)
        assert b["lead_mask"].shape == (B, 12) and (b["lead_mask"] == b["lead_mask"][0]).all()
        assert (b["x"][:, ~b["lead_mask"][0]] == 0).all()
        torch.testing.assert_close(b["target"], b["x"][..., PAD:-PAD])
        assert b["time"].dtype == torch.float32 and b["event"].dtype == torch.float32
        assert b["eid"].dtype == torch.int64
        assert abs(float(b["event"].sum()) - B * n_ev / n_train) <= 1
        seen += b["index"].tolist()
    assert sorted(seen) == sorted(sp.train_idx.tolist())
    # every event and eid matches the cache row it came from
    lab = dm.labels("train")
    order = {int(r): k for k, r in enumerate(lab["index"])}
    b = batches[0]
    for r, e, eid in zip(b["index"].tolist(), b["event"].tolist(), b["eid"].tolist()):
        assert lab["event"][order[r]] == e and lab["eid"][order[r]] == eid
    # batches draw different subsets (P(12 draws all equal) < 3e-4)
    for epoch in (1, 2):
        loader.batch_sampler.set_epoch(epoch)
        batches += list(loader)
    assert len({tuple(b["lead_mask"][0].tolist()) for b in batches}) > 1


def test_ukb_eval_loaders_unmasked(ukb_cache: Path, hyp_splits) -> None:
    sp = hyp_splits[1]
    dm = UKBDataModule(ukb_cache, "hyp", sp, batch_size=32, eval_batch_size=50)
    for loader, rows in ((dm.val_dataloader(), sp.val_idx), (dm.predict_dataloader(), sp.test_idx)):
        got = []
        for b in _finished(loader):
            assert b["lead_mask"].all()
            torch.testing.assert_close(b["target"], b["x"][..., PAD:-PAD])
            got += b["index"].tolist()
        assert got == rows.tolist()
    fit_rows = [r for b in dm.fit_rows_dataloader() for r in b["index"].tolist()]
    assert fit_rows == sorted(sp.train_idx.tolist() + sp.val_idx.tolist())
    no_mask = UKBDataModule(ukb_cache, "hyp", sp, batch_size=32, mask_leads=False)
    assert all(b["lead_mask"].all() for b in no_mask.train_dataloader())


def test_ukb_datamodule_rejects_foreign_split(ukb_cache: Path, hyp_splits) -> None:
    sp = hyp_splits[0]
    with pytest.raises(ValueError, match="not in cohort 'mi'"):
        UKBDataModule(ukb_cache, "mi", sp)
    bad = pickle.loads(pickle.dumps(sp))
    bad.test_eid = bad.test_eid + 1
    with pytest.raises(ValueError, match="eids do not match"):
        UKBDataModule(ukb_cache, "hyp", bad)


def test_ukb_datamodule_ddp_world_from_trainer(ukb_cache: Path, hyp_splits) -> None:
    sp = hyp_splits[0]
    ref = UKBDataModule(ukb_cache, "hyp", sp, batch_size=32).make_batch_sampler()
    parts, masks = [], []
    for rank in (0, 1):
        torch.manual_seed(7)  # seed_everything gives every rank the same global seed
        dm = UKBDataModule(ukb_cache, "hyp", sp, batch_size=32)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        s = dm.make_batch_sampler()
        assert (s.num_replicas, s.rank) == (2, rank)
        parts.append(list(s))
        masks.append([b["lead_mask"][0].tolist() for b in dm.train_dataloader()])
    assert masks[0] == masks[1]  # both ranks mask global batch i with the same subset
    assert len(parts[0]) == len(parts[1]) == len(ref)
    for i, g in enumerate(ref.global_batches()):
        assert set(parts[0][i]) | set(parts[1][i]) == set(g.tolist())
        assert not set(parts[0][i]) & set(parts[1][i])


def test_ukb_worker_masks_follow_the_datamodule_seed(ukb_cache: Path, hyp_splits) -> None:
    """With workers, subsets come from the loader generator (DataModule seed), so DDP ranks
    agree even if their global seeds differ; the global seed does not matter."""
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        dm = UKBDataModule(ukb_cache, "hyp", hyp_splits[0], batch_size=16, num_workers=2)
        runs.append([b["lead_mask"][0].tolist() for b in dm.train_dataloader()])
    assert runs[0] == runs[1] and len(set(map(tuple, runs[0]))) > 1


def test_lightning_can_inject_distributed_sampler(ukb_cache: Path, hyp_splits) -> None:
    """Under DDP Lightning re-instantiates custom batch samplers with a ``sampler`` argument."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler

    dm = UKBDataModule(ukb_cache, "hyp", hyp_splits[0], batch_size=32)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()
    dist_sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=False)
    new = _update_dataloader(loader, dist_sampler, mode=RunningStage.TRAINING)
    s = new.batch_sampler
    assert isinstance(s, EventStratifiedBatchSampler) and (s.num_replicas, s.rank) == (2, 1)
    assert [list(b) for b in s] == list(loader.batch_sampler)
    assert len(list(new)) == len(s)


def test_ukb_lightning_fit_smoke(ukb_cache: Path, hyp_splits) -> None:
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(12 * 600, 1)
            self.seen_masks: list[torch.Tensor] = []

            self.first_batches: list[list[int]] = []

        def training_step(self, batch, batch_idx):
            self.seen_masks.append(batch["lead_mask"][0])
            if batch_idx == 0:
                self.first_batches.append(sorted(batch["index"].tolist()))
            return self.lin(batch["target"].flatten(1)).mean() + batch["event"].sum() * 0

        def validation_step(self, batch, batch_idx):
            assert batch["lead_mask"].all()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = UKBDataModule(ukb_cache, "hyp", hyp_splits[0], batch_size=32)
    model = Tiny()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert len(model.seen_masks) == 2 * len(dm.make_batch_sampler())
    assert trainer.train_dataloader.batch_sampler.epoch == 1  # Lightning called set_epoch
    assert model.first_batches[0] != model.first_batches[1]  # so epochs are reshuffled


# --------------------------------------------------------------------------- cache checks
def test_nan_rows_are_refused_naming_the_ids(tmp_path: Path) -> None:
    """A NaN written into a built cache's beats is refused on open, naming the row's id."""
    from data_modules.sources.ukb import build_ukb_cache
    from tests.test_ukb_cache import _outcomes, write_xml

    xml = tmp_path / "xml"
    for eid in (11, 12, 13):
        write_xml(xml / f"{eid}_20205_2_0.xml", with_strip=False)
    csv = _outcomes(tmp_path / "o.csv", [dict(eid=e, event=e % 2, time_days=100 * e, hyp=1,
                                              mi=0) for e in (11, 12, 13)])
    out = tmp_path / "u.h5"
    build_ukb_cache(xml, csv, out, workers=1, progress=False)
    assert len(UKBDataset(out)) == 3
    with h5py.File(out, "r+") as f:
        f["median"][1, 4, 100] = np.nan
    with pytest.raises(CacheError, match=r"u.h5: dataset 'median' has non-finite values "
                                         r"\(NaN/inf\) in 1 row\(s\): eid \[12\]"):
        UKBDataset(out)
    with pytest.raises(DataError, match=r"eid \[12\]"):
        make_ukb_splits(out, "hyp", seeds=[0])

    ptb = write_ptbxl_cache(tmp_path / "p.h5", n=12)
    with h5py.File(ptb, "r+") as f:
        f["median_clean"][5, 0, 0] = np.inf
        bad_id = int(f["ecg_id"][5])
    with pytest.raises(DataError, match=rf"'median_clean' .* 1 row\(s\): ecg_id \[{bad_id}\]"):
        PTBXLDataModule(ptb, batch_size=4)


def test_wrong_kind_names_expected_and_found(ptbxl_cache: Path, ukb_cache: Path) -> None:
    with pytest.raises(DataError, match=r"is a UK Biobank cache \(kind 'ukb'\); expected a "
                                        r"PTB-XL cache"):
        PTBXLDataModule(ukb_cache, batch_size=4)
    with pytest.raises(DataError, match=r"is a PTB-XL cache \(kind 'ptbxl'\); expected a UK "
                                        r"Biobank cache"):
        UKBDataset(ptbxl_cache)
