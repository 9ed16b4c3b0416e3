"""The gateways several test modules share (started by the session fixtures of
tests/integration/conftest.py on the session's archive): one with a study of Hospital A
for DICOMweb, sign-in, share links and deletion; one with three studies for the viewer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient

from security.issuer import EmbeddedIssuer
from synthetic import StudySpec

__all__ = ["GATEWAY_INSTANCES", "GATEWAY_SPEC", "VIEWER_SPECS", "Gateway", "ViewerSite"]

GATEWAY_SPEC = StudySpec(series=2, slices=3, rows=64, columns=64, patient_id="GW0001", seed=31)
GATEWAY_INSTANCES = GATEWAY_SPEC.series * GATEWAY_SPEC.slices


@dataclass
class Gateway:
    url: str
    issuer: EmbeddedIssuer
    study_uid: str
    files: list[Path]
    log: Path

    @property
    def root(self) -> str:
        return f"{self.url}/dicom-web"

    def token(self, institution: str, scopes: tuple[str, ...] = ("dicom.read",)) -> str:
        subject = f"client-{institution}"
        return self.issuer.mint(subject=subject, institution=institution, scopes=scopes)

    def client(self, institution: str) -> DICOMwebClient:
        headers = {"Authorization": f"Bearer {self.token(institution)}"}
        return DICOMwebClient(url=self.root, headers=headers)


# Hospital A: two studies (one large enough to look at); Hospital B: one it must not see
VIEWER_SPECS = {
    "VW-A1": ("HOSPA", StudySpec(series=1, slices=3, rows=256, columns=256, seed=41)),
    "VW-A2": ("HOSPA", StudySpec(modality="MR", series=1, slices=2, rows=64, columns=64, seed=42)),
    "VW-B1": ("HOSPB", StudySpec(series=1, slices=2, rows=64, columns=64, seed=43)),
}


@dataclass
class ViewerSite:
    url: str
    issuer: EmbeddedIssuer
    studies: dict[str, str]  # patient id -> study uid
    log: Path
    series: dict[str, str] = field(default_factory=dict)  # study uid -> first series uid

    def token(self, institution: str) -> str:
        return self.issuer.mint(
            subject=f"viewer-{institution}", institution=institution, scopes=("dicom.read",)
        )

    def qido(self, token: str, path: str, **params: str) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
        answer = requests.get(
            f"{self.url}/dicom-web{path}", params=params, headers=headers, timeout=30
        )
        answer.raise_for_status()
        return list(answer.json())
