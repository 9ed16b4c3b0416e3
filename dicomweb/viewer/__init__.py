"""The viewer's routes in the gateway: OHIF's files and configurations under ``/viewer``
(the bundle and its configuration come from the top-level ``viewer`` package)."""
