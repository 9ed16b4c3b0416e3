"""The query model's public face for the gateway and the DIMSE handlers.

What QIDO-RS and C-FIND can match and return (:class:`Attribute`, :class:`Level`,
:func:`lookup`), a validated search (:class:`Query`: from QIDO-RS query parameters by
:func:`parse_query`, from a DIMSE identifier's keys by :func:`query_for_keys`), its SQL
with the access rule inside (:func:`build_select`), its answer as the catalog holds it
(:func:`search_matches`, :class:`Match`, :func:`catalog_values`) or as DICOM JSON
(:func:`search`, :func:`element`) and the WADO-RS look-up of the stored instances a
principal reaches (:func:`instances_to_retrieve`), and those a C-MOVE, a deletion or a
download names (:func:`instances_to_move`, :func:`deletion_targets`,
:func:`study_orthanc_ids`), the reading worklist's search (:func:`worklist_studies`) and
what it says of each study (:func:`worklist_entries`, noted by :func:`record_opened`), and
the access rule on its own: which studies a principal reaches (:func:`reachable`,
:func:`reaches_study`), may store reports into (:func:`reportable`,
:func:`may_store_reports`, :func:`claim_for_store`) or delete (:func:`deletable`).
Functions that read the catalog take the part of it they read, the study index
(:class:`archive.api.StudyIndex`; a whole ``Catalog`` is one). Everything else in
``query`` is private: import from here.
"""

from query.access import (
    claim_for_store,
    deletable,
    granted,
    may_store_reports,
    reachable,
    reaches_study,
    reportable,
)
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
from query.worklist import (
    WorklistEntry,
    on_worklist,
    record_opened,
    status_of,
    worklist_entries,
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
    "WorklistEntry",
    "build_select",
    "catalog_values",
    "claim_for_store",
    "deletable",
    "deletion_targets",
    "element",
    "granted",
    "instances_to_move",
    "instances_to_retrieve",
    "lookup",
    "may_store_reports",
    "on_worklist",
    "parse_query",
    "query_for_keys",
    "reachable",
    "reaches_study",
    "record_opened",
    "reportable",
    "representatives",
    "search",
    "search_matches",
    "status_of",
    "study_orthanc_ids",
    "worklist_entries",
    "worklist_studies",
]
