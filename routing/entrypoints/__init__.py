"""The entry points: the composition root (``bootstrap``), the API, the consoles, the CLI and
``up``.

The outermost layer: nothing else in ``routing`` imports it (``lint-imports``)."""
