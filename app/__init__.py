"""Chronos Ingest service: CLI, API, workers, converters, chunkers, embedders, configuration."""
