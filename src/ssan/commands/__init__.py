"""Sub-commands of the ``ssan`` CLI, one module each (see :mod:`ssan.cli`)."""
