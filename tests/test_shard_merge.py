"""Sharded cache builds (``--shard K/N``) and ``ecg-dan cache merge``: the merge of the parts
equals the whole build bit for bit (every dataset, attribute, skip and warning), for the
PTB-XL and UK Biobank twins with skips of every kind; refusals of a wrong set of parts."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_modules.cache import WHOLE, Shard, open_cache, read_skipped, read_warnings, sort_skips
from data_modules.cache.merge import merge_caches
from data_modules.errors import DataError
from data_modules.sources.ptbxl import build_ptbxl_cache
from data_modules.sources.ukb import build_ukb_cache, shard_key
from data_modules.synthetic import make_synthetic
from ecg_dan.cli import main

N = 3


def assert_same_content(a: Path, b: Path) -> None:
    """Every root attribute, group, dataset (dtype, shape, values) and dataset attribute of
    ``a`` equals ``b``'s."""
    def attrs(x: h5py.AttributeManager) -> dict:
        return {k: (x.get_id(k).dtype, np.asarray(x[k]).tolist()) for k in x}

    def same(x: h5py.Group, y: h5py.Group, where: str) -> None:
        assert attrs(x.attrs) == attrs(y.attrs), where
        assert sorted(x) == sorted(y), where
        for k in x:
            if isinstance(x[k], h5py.Group):
                same(x[k], y[k], f"{where}{k}/")
                continue
            dx, dy = x[k], y[k]
            assert (dx.dtype, dx.shape) == (dy.dtype, dy.shape), where + k
            assert attrs(dx.attrs) == attrs(dy.attrs), where + k
            vx, vy = dx[()], dy[()]
            if vx.dtype.kind == "f":
                np.testing.assert_array_equal(vx.view(np.uint8), vy.view(np.uint8), where + k)
            else:
                np.testing.assert_array_equal(vx, vy, where + k)

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        same(fa, fb, "/")


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    """PTB-XL and UK Biobank twins with a skip of every kind and recorded warnings."""
    root = tmp_path_factory.mktemp("shard-twins")
    paths = make_synthetic(root, n=8, n_ukb=11, seed=5, events="dense", progress=False)
    ptbxl = paths["ptbxl"]
    db = pd.read_csv(ptbxl / "ptbxl_database.csv")
    dat = (ptbxl / db.loc[1, "filename_hr"]).with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1000])  # truncated record
    db.loc[4, "scp_codes"] = "{'NOTACODE': 100.0}"  # unknown SCP code
    db.to_csv(ptbxl / "ptbxl_database.csv", index=False)

    xml, csv = paths["ukb_xml"], paths["ukb_outcomes"]
    table = pd.read_csv(csv)
    e = table["eid"].tolist()
    (xml / f"{e[0]}_20205_2_0.xml").write_text("<CardiologyXML><PatientInfo>")  # corrupt
    (xml / "sub").mkdir()
    shutil.copy(xml / f"{e[1]}_20205_2_0.xml", xml / "sub" / f"{e[1]}_20205_3_0.xml")  # dup
    (xml / "sub" / f"{e[2]}_20205_3_0.xml").write_text("not xml")  # unusable 2nd file
    (xml / f"{e[3]}_20205_2_0.xml").unlink()  # outcome row without a file
    table = table[table["eid"] != e[4]].copy()  # a file without an outcome row
    table.loc[table["eid"] == e[5], "time_days"] = 30000  # implausible span: a warning
    table.loc[table["eid"] == e[6], "ecg_date"] = "2001-01-01"  # date warnings
    table.to_csv(csv, index=False)
    return {"ptbxl": ptbxl, "xml": xml, "outcomes": csv, "root": root}


def _parts(build, out_dir: Path, n: int = N) -> list[Path]:
    """Build parts 0..n-1 in a shuffled order; return them shuffled again."""
    order = list(range(n))
    random.Random(7).shuffle(order)
    parts = [out_dir / f"part{k}.h5" for k in order]
    for k, p in zip(order, parts):
        build(p, Shard(k, n))
    random.Random(8).shuffle(parts)
    return parts


def test_sort_skips_integers_first_then_strings_stable():
    pairs = [("b.xml", "1"), ("10", "a"), ("2", "b"), ("10", "c"), ("-3", "d"), ("a/x.xml", "e")]
    assert sort_skips(pairs) == [("-3", "d"), ("2", "b"), ("10", "a"), ("10", "c"),
                                 ("a/x.xml", "e"), ("b.xml", "1")]


def test_ptbxl_parts_merge_to_the_whole_build(twins, tmp_path):
    def build(out: Path, shard: Shard) -> None:  # through the CLI's --shard
        assert main(["cache", "ptbxl", "--root", str(twins["ptbxl"]), "--out", str(out),
                     "--workers", "1", "--shard", str(shard)]) == 0

    whole = tmp_path / "whole.h5"
    build_ptbxl_cache(twins["ptbxl"], whole, workers=1, progress=False)
    parts = _parts(build, tmp_path)
    with open_cache(parts[0], "ptbxl") as f:  # a part is a valid cache marked as a part
        assert f.attrs["shard"] == json.loads(f.attrs["build_config"])["shard"]
    sizes = [int(h5py.File(p, "r").attrs["n_records"]) for p in parts]
    assert min(sizes) > 0
    merged = tmp_path / "merged.h5"
    assert main(["cache", "merge", *map(str, parts), "--out", str(merged)]) == 0
    assert_same_content(merged, whole)
    with h5py.File(whole, "r") as f:
        reasons = dict(read_skipped(f))
    assert len(reasons) == 2 and any(r.startswith("labels:") for r in reasons.values())
    # a re-run with the same parts finds the merged cache and does nothing
    assert merge_caches(parts, merged).noop


def test_ukb_parts_merge_to_the_whole_build(twins, tmp_path):
    def build(out: Path, shard: Shard = WHOLE) -> None:
        build_ukb_cache(twins["xml"], twins["outcomes"], out, workers=1, progress=False,
                        strips=True, shard=shard)

    whole = tmp_path / "whole.h5"
    build(whole)
    parts = _parts(build, tmp_path)
    merged = tmp_path / "merged.h5"
    merge_caches(parts, merged)
    assert_same_content(merged, whole)
    with h5py.File(whole, "r") as f:
        assert f["strip"].chunks == (1, 12, 5000)
        cats = {r.split(":")[0] for _, r in read_skipped(f)}
        ids = [i for i, _ in read_skipped(f)]
        assert len(read_warnings(f)) >= 2
    assert cats == {"unusable XML", "duplicate ECG files", "no ECG file", "no outcome row"}
    assert ids[-1].startswith("sub")  # a string id (the unusable 2nd file) sorts last
    assert sum(bool(read_skipped(h5py.File(p, "r"))) for p in parts) >= 2

    # refusals, each one line naming the odd part
    with pytest.raises(DataError, match=r"part\(s\) .*/3 missing"):
        merge_caches(parts[:2], tmp_path / "x.h5")
    with pytest.raises(DataError, match="given twice"):
        merge_caches([*parts, parts[0]], tmp_path / "x.h5")
    again = tmp_path / "again.h5"
    shutil.copy(parts[1], again)
    with pytest.raises(DataError, match=f"{again}: part ./3 given twice"):
        merge_caches([*parts, again], tmp_path / "x.h5")
    with pytest.raises(DataError, match=f"{whole}: not a part of a sharded build"):
        merge_caches([whole, *parts], tmp_path / "x.h5")
    k = int(h5py.File(parts[0], "r").attrs["shard"].split("/")[0])
    days = tmp_path / "days.h5"
    build_ukb_cache(twins["xml"], twins["outcomes"], days, time_unit="days", workers=1,
                    progress=False, strips=True, shard=Shard(k, N))
    with pytest.raises(DataError, match=f"{days}: its build config differs .*time_unit"):
        merge_caches([days, *parts[1:]], tmp_path / "x.h5")
    other_n = tmp_path / "of4.h5"
    build(other_n, Shard(0, 4))
    with pytest.raises(DataError, match=f"{other_n}: its number of parts N differs"):
        merge_caches([*parts, other_n], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_empty_part_and_a_unit_split_between_shards(twins, tmp_path):
    xml, csv = twins["xml"], twins["outcomes"]
    keys = [shard_key(str(p.relative_to(xml))) for p in xml.rglob("*.xml")]
    keys += pd.read_csv(csv)["eid"].tolist()
    k = next(k for k in range(50) if not any(Shard(k, 50).holds(x) for x in keys))
    empty = tmp_path / "empty.h5"
    build_ukb_cache(xml, csv, empty, workers=1, progress=False, shard=Shard(k, 50))
    with open_cache(empty, "ukb") as f:  # an empty part is still a valid cache
        assert f.attrs["n_records"] == 0 and f["median"].shape == (0, 12, 600)

    # a file not named <eid>_20205_... is sharded by its path: here away from its eid's row
    moved = tmp_path / "xml"
    shutil.copytree(xml, moved)
    eid = next(e for e in pd.read_csv(csv)["eid"][5:]  # a usable file, an outcome row
               if (moved / f"{e}_20205_2_0.xml").is_file() and Shard(0, 2).holds(e))
    name = next(f"anon{i}.xml" for i in range(100) if Shard(1, 2).holds(f"anon{i}.xml"))
    (moved / f"{eid}_20205_2_0.xml").rename(moved / name)
    parts = [tmp_path / f"p{i}.h5" for i in range(2)]
    for i, p in enumerate(parts):
        build_ukb_cache(moved, csv, p, workers=1, progress=False, shard=Shard(i, 2))
    with pytest.raises(DataError, match=f"eid {eid} is .* split between shards"):
        merge_caches(parts, tmp_path / "x.h5")
