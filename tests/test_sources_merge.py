"""Every new source builds through the CLI whole and as 2 shards + ``cache merge``, and the two
caches are equal bit for bit (issue 17: CODE-15%, SaMi-Trop, a user's own cohort, MIMIC-IV-ECG;
PTB-XL and UK Biobank: tests/test_shard_merge.py)."""

from pathlib import Path

import pytest

from data_modules.cache import open_cache, read_skipped
from data_modules.synthetic.formats import FORMATS
from ecg_dan.cli import main
from tests.test_shard_merge import assert_same_content

# source -> (twin format, n, the cache command's source arguments from the twin's paths, kind)
SOURCES = {
    "code15": ("code15", 14, lambda p: ["--root", str(p["code15"])], "cohort"),
    "samitrop": ("samitrop", 8, lambda p: ["--root", str(p["samitrop"])], "cohort"),
    "cohort": ("cohort", 12, lambda p: ["--ecgs", str(p["cohort_ecgs"]), "--table",
                                        str(p["cohort_table"])], "cohort"),
    "mimic": ("mimic", 10, lambda p: ["--root", str(p["mimic"])], "corpus"),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_source_builds_whole_and_as_merged_shards_alike(source, tmp_path: Path):
    fmt, n, args, kind = SOURCES[source]
    paths = FORMATS[fmt](tmp_path / "twin", n=n, seed=3, events="dense", setting="standard")
    cmd = ["cache", source, *args(paths), "--workers", "1"]
    whole = tmp_path / "whole.h5"
    assert main([*cmd, "--out", str(whole)]) == 0
    parts = [tmp_path / f"part{k}.h5" for k in range(2)]
    for k in (1, 0):
        assert main([*cmd, "--out", str(parts[k]), "--shard", f"{k}/2"]) == 0
    merged = tmp_path / "merged.h5"
    assert main(["cache", "merge", *map(str, parts), "--out", str(merged)]) == 0
    assert_same_content(whole, merged)
    def size(path: Path) -> int:  # records written + skipped
        with open_cache(path, kind) as f:
            return int(f.attrs["n_records"]) + len(read_skipped(f))

    # a real build, split into two non-empty parts that together hold every record
    with open_cache(whole, kind) as f:
        assert int(f.attrs["n_records"]) > 0
    sizes = [size(p) for p in parts]
    assert min(sizes) > 0 and sum(sizes) == size(whole)
