"""Datasets. A loader is a function ``load_*(seed, **params) -> DataBundle``.

Each ``configs/data/*.yaml`` names its loader with ``_target_``; the CLI calls it with the
run's seed, so splits are a pure function of the config.
"""
