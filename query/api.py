"""The query model's public face for the gateway and the DIMSE handlers.

What QIDO-RS and C-FIND can match and return (:class:`Attribute`, :class:`Level`,
:func:`lookup`), a validated search (:class:`Query`: from QIDO-RS query parameters by
:func:`parse_query`, from a DIMSE identifier's keys by :func:`query_for_keys`), its SQL
with the access rule inside (:func:`build_select`), its answer as the catalog holds it
(:func:`search_matches`, :class:`Match`, :func:`catalog_values`) or as DICOM JSON
(:func:`search`, :func:`element`) and the WADO-RS look-up of the stored instances a
principal reaches (:func:`instances_to_retrieve`), and those a C-MOVE, a deletion or a
download names (:func:`instances_to_move`, :func:`deletion_targets`,
:func:`study_orthanc_ids`), the reading worklist's search (:func:`worklist_studies`).
Everything else in ``query`` is private: import from here.
"""

from query.attributes import ATTRIBUTES, DEFAULT_RETURN, RETRIEVE_URL, Attribute, Level, lookup
from query.dicomjson import NUMERIC_VRS, catalog_values, element
from query.matching import Condition, Query, build_select, parse_query, query_for_keys
from query.search import Match, StoredInstance, instances_to_retrieve, search, search_matches
from query.targets import (
    deletion_targets,
    instances_to_move,
    representatives,
    study_orthanc_ids,
    worklist_studies,
)

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_RETURN",
    "NUMERIC_VRS",
    "RETRIEVE_URL",
    "Attribute",
    "Condition",
    "Level",
    "Match",
    "Query",
    "StoredInstance",
    "build_select",
    "catalog_values",
    "deletion_targets",
    "element",
    "instances_to_move",
    "instances_to_retrieve",
    "lookup",
    "parse_query",
    "query_for_keys",
    "representatives",
    "search",
    "search_matches",
    "study_orthanc_ids",
    "worklist_studies",
]
