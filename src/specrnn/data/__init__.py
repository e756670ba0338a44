"""Data: manifests and splits, the sharded feature store, batching."""
