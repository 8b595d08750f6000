"""Batch jobs: a folder, glob or manifest of images through the engine, resumable, locally or on Ray.

Nothing heavy is imported here: the CLI registers the `batch` command without loading torch or Ray.
"""
