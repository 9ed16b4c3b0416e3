"""STOW-RS: storing instances through Orthanc after the archive's checks and ownership claim."""
