"""Settings: the config validated before anything runs (``validate``), the ``metrics:`` block (``metrics``),
config nodes as plain data and their hashes (``nodes``)."""
