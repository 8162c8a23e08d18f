"""Per-sample losses, one module per paper; each registers one option of the ``objective`` group."""
