"""Emit: the manifest, the output directory (locked, staged, journalled, committed),
drift against what is on disk, the worker pool and fleet builds."""
