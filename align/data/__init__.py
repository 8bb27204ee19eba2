"""Data: dataset sources, download, split, shards and the shard reader."""
