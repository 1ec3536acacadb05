"""Command-line interfaces: ``kiwispray`` (main) and ``edit-host`` (the original's habits)."""
