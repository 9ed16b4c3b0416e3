"""The viewer's public face for the gateway (and the share pages): import from here.

``viewer`` imports nothing else of the project: it knows URLs, OHIF's files and their
configuration, never tokens, studies or the catalog.
"""

from viewer.bundle import (
    OHIF,
    Asset,
    Bundle,
    BundleError,
    OhifRelease,
    default_bundle_dir,
    security_headers,
)
from viewer.config import (
    SHARE_TOKEN_KEY,
    SIGNED_OUT_ROUTE,
    VIEWER_CLIENT_ID,
    WORKLIST_SOURCE,
    StaffSignIn,
    ViewerClient,
    ViewerMode,
    ViewerUrls,
    app_config,
    app_config_js,
    viewer_client,
)
from viewer.pages import SIGNED_OUT_CSP, signed_out_page
from viewer.share_pages import SHARE_SCRIPT, share_headers, share_page

__all__ = [
    "OHIF",
    "SHARE_SCRIPT",
    "SHARE_TOKEN_KEY",
    "StaffSignIn",
    "SIGNED_OUT_CSP",
    "SIGNED_OUT_ROUTE",
    "VIEWER_CLIENT_ID",
    "WORKLIST_SOURCE",
    "Asset",
    "Bundle",
    "BundleError",
    "OhifRelease",
    "ViewerClient",
    "ViewerMode",
    "ViewerUrls",
    "app_config",
    "app_config_js",
    "default_bundle_dir",
    "security_headers",
    "share_headers",
    "share_page",
    "signed_out_page",
    "viewer_client",
]
