"""Synthetic DICOM studies for the demo, the tests and the benchmarks.

Not part of the archive: nothing below ``deploy/``, ``bench/`` and ``tests/`` imports it.
"""

from synthetic.studies import StudySpec, generate_studies, generate_study, write_study

__all__ = ["StudySpec", "generate_studies", "generate_study", "write_study"]
