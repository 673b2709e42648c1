"""Shard assignment: stable, a partition, and refusals of malformed K/N."""

import pytest

from data_modules.cache.shard import WHOLE, Shard


def test_shards_partition_the_keys_and_are_stable():
    keys = list(range(1000)) + [f"p{i}" for i in range(200)]
    shards = [Shard(k, 7) for k in range(7)]
    owners = [[s.index for s in shards if s.holds(k)] for k in keys]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(o == [k] for o in owners) for k in range(7)]
    assert min(sizes) > 100  # roughly balanced
    # the hash is sha1 of str(key): fixed across processes and machines
    assert [k for k in range(20) if Shard(0, 2).holds(k)] == \
        [k for k in range(20) if Shard(0, 2).holds(str(k))]
    assert Shard(0, 2).holds(3) == Shard.parse("0/2").holds(3)


def test_parse_and_config():
    assert Shard.parse(None) is WHOLE and Shard.parse("") is WHOLE
    assert Shard.parse(" 3 / 16 ") == Shard(3, 16)
    assert Shard(3, 16).config() == {"shard": "3/16"} and WHOLE.config() == {}
    assert all(WHOLE.holds(k) for k in range(10))
    for bad in ("16/16", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)
