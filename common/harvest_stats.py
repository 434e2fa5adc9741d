"""Names of a harvest's cells-side statistics: one list for who computes and who stores them.

The control core (``controller.core.exposure``) computes them for each harvest window of a
reactor with ``[reactors.culture]``; the recorder (``recorder.points``) turns them into store
fields. Both may import only ``common``, so the list lives here (docs/physics.md §B7).
"""

from __future__ import annotations

CELLS_KEYS = (
    "cells_window_s",
    "cells_in_band_s",
    "cells_o2_mean_pct",
    "cells_dose_error_pct_h",
    "cells_excursions",
    "cells_excursion_s",
)
"""Cells-side statistics of a harvest window (docs/physics.md §B7), beside the chamber's."""
