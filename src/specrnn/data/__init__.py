"""Data: manifests and splits, the feature cache, batching."""
