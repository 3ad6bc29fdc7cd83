"""Settings: the config checked once into typed records (``validate`` -> ``config.Settings``), the ``saliency`` node's
checks (``saliency``), the ``metrics:`` block (``metrics``), config nodes as plain data and their hashes (``nodes``)."""
