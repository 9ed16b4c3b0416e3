"""The study index's tables, for the one package that builds SQL on them: ``query``.

QIDO-RS, C-FIND, the access rule and the reading worklist are queries over these tables
(``query``'s job); every other package calls functions of :mod:`archive.api` or
``query.api`` instead, which tests/unit/test_boundaries.py checks. Rows are written by
the catalog (:mod:`archive.catalog`); tables are made by the migrations.
"""

from archive.catalog.schema import (
    instance_sources,
    instances,
    institutions,
    patients,
    series,
    studies,
)

__all__ = ["instance_sources", "instances", "institutions", "patients", "series", "studies"]
