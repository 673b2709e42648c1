"""HDF5 caches of median beats (docs/data_formats.md): what a cache is (:mod:`.format`), how
one is written (:mod:`.write`, under :mod:`.lock`, with :mod:`.parallel` workers) and the one
way it is read (:mod:`.read`). Callers import from here."""

from data_modules.cache.format import (
    ID_DATASET,
    KIND_NAMES,
    KINDS,
    PRETRAIN_KINDS,
    SCHEMA_VERSION,
    STR_DTYPE,
    SURVIVAL_KINDS,
    CacheError,
    config_json,
    sha1_file,
)
from data_modules.cache.lock import build_lock, lock_path
from data_modules.cache.parallel import parallel_map
from data_modules.cache.read import (
    close_handles,
    is_complete_cache,
    open_cache,
    open_rows,
    read_skipped,
    read_warnings,
    validate_cache,
    worker_handle,
)
from data_modules.cache.shard import WHOLE, Shard
from data_modules.cache.write import (
    Appender,
    BuildSummary,
    atomic_h5,
    reason_key,
    sort_skips,
    staging_h5,
    write_skipped,
    write_strings,
    write_warnings,
)

__all__ = [
    "ID_DATASET", "KIND_NAMES", "KINDS", "PRETRAIN_KINDS", "SCHEMA_VERSION", "STR_DTYPE",
    "SURVIVAL_KINDS", "WHOLE",
    "Appender", "BuildSummary", "CacheError", "Shard", "atomic_h5", "build_lock",
    "close_handles", "config_json",
    "is_complete_cache", "lock_path", "open_cache", "open_rows", "parallel_map", "reason_key",
    "read_skipped", "read_warnings", "sha1_file", "sort_skips", "staging_h5", "validate_cache",
    "worker_handle", "write_skipped", "write_strings", "write_warnings",
]
