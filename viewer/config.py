"""The OHIF app configuration (``app-config.js``) the gateway serves, as a pure function.

Two variants of the same configuration:

* ``staff``: people log in through OpenID Connect (authorization code with PKCE) at the
  embedded issuer; OHIF's own OIDC client (oidc-client-ts) reads the issuer's discovery
  document at ``<authority>/.well-known/openid-configuration``.
* ``share``: no login. A share-link page (``sharing``) exchanges the link for a
  study-narrowed access token and puts it in ``sessionStorage`` under
  :data:`SHARE_TOKEN_KEY`; this variant hands that token to every DICOMweb request. The
  token never travels in a URL (OHIF's own ``?token=`` parameter would put it in history,
  logs and Referer headers).

OHIF 3.13 accepts ``window.config`` as a function ``({servicesManager}) => config``
(``appInit``); the share variant uses that to install its ``getAuthorizationHeader`` on
OHIF's ``userAuthenticationService`` as soon as OHIF registers it, which is what the
DICOMweb data source, the image loader and the SEG/SR loaders all ask for headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "SHARE_TOKEN_KEY",
    "StaffSignIn",
    "SIGNED_OUT_ROUTE",
    "VIEWER_CLIENT_ID",
    "ViewerClient",
    "ViewerMode",
    "ViewerUrls",
    "app_config",
    "app_config_js",
    "viewer_client",
]

SHARE_TOKEN_KEY = "vna.viewer.token"  # noqa: S105 - a storage key, not a secret
"""``sessionStorage`` key the share variant reads its bearer token from."""

VIEWER_CLIENT_ID = "vna-viewer"
"""OAuth2 client id of the viewer: a public client (no secret, PKCE) of the embedded issuer."""

SIGNED_OUT_ROUTE = "signed-out"
"""The viewer's post-logout page, below the viewer's path.

Not OHIF's default (the viewer's root, ``/viewer/``): OHIF 3.13 mounts its sign-out
callback at the *pathname* of ``post_logout_redirect_uri`` below its router base, so
``/viewer/`` would become ``/viewer/viewer``, the basic mode's route, and every study
opened would run the sign-out callback, which navigates to a broken ``??`` URL. The
gateway answers this path itself with a static page (``viewer.pages``).
"""

STAFF_SCOPES = ("openid", "profile", "dicom.read", "dicom.write")
"""Scopes the staff viewer asks for: reading, and storing reports (SR) back."""


class ViewerMode(StrEnum):
    """Which configuration variant: OIDC login, or a token handed over by a share page."""

    STAFF = "staff"
    SHARE = "share"


@dataclass(frozen=True, slots=True)
class ViewerUrls:
    """Where the gateway is and where it serves the viewer.

    ``public_url`` is the gateway's public base URL (no trailing slash), which is also the
    embedded issuer's ``iss``; ``base_path`` is the viewer's path below the public URL's
    host (``/viewer``, or ``/prefix/viewer`` behind a reverse proxy with a path prefix).
    """

    public_url: str
    base_path: str = "/viewer"

    @classmethod
    def for_gateway(cls, public_url: str, mount: str = "/viewer") -> ViewerUrls:
        """The viewer mounted at ``mount`` of a gateway reached at ``public_url``."""
        public_url = public_url.rstrip("/")
        prefix = urlsplit(public_url).path.rstrip("/")
        return cls(public_url, prefix + "/" + mount.strip("/"))

    @property
    def origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def public_path(self) -> str:
        """OHIF's ``PUBLIC_URL``: where its files are, with a trailing slash."""
        return self.base_path + "/"

    def router_basename(self, mode: ViewerMode) -> str:
        """The React router's base: the viewer itself, or its share sub-path."""
        return self.base_path if mode is ViewerMode.STAFF else f"{self.base_path}/share"

    def config_path(self, mode: ViewerMode) -> str:
        return f"{self.router_basename(mode)}/app-config.js"

    @property
    def viewer_url(self) -> str:
        return self.origin + self.base_path

    @property
    def dicomweb_root(self) -> str:
        return f"{self.public_url}/dicom-web"

    @property
    def wado_uri_root(self) -> str:
        return f"{self.public_url}/wado"

    @property
    def callback_url(self) -> str:
        return f"{self.viewer_url}/callback"

    @property
    def signed_out_url(self) -> str:
        """Where the issuer sends the browser after a sign-out: a plain page of the
        gateway, not OHIF (see :data:`SIGNED_OUT_ROUTE`)."""
        return f"{self.viewer_url}/{SIGNED_OUT_ROUTE}"


@dataclass(frozen=True, slots=True)
class ViewerClient:
    """What the embedded issuer must register for the staff viewer (a public client)."""

    client_id: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    public: bool = True  # no secret: a browser cannot keep one; PKCE (S256) instead


@dataclass(frozen=True, slots=True)
class StaffSignIn:
    """Where staff sign in when it is not the embedded issuer (an external OIDC provider
    such as Keycloak, whose access tokens the gateway trusts via `gateway.external_issuers`).
    """

    authority: str
    client_id: str
    scope: str = " ".join(STAFF_SCOPES)


def viewer_client(urls: ViewerUrls) -> ViewerClient:
    """The OAuth2 client registration the staff variant's configuration relies on."""
    return ViewerClient(
        client_id=VIEWER_CLIENT_ID,
        redirect_uris=(urls.callback_url, f"{urls.viewer_url}/silent-refresh.html"),
        post_logout_redirect_uris=(urls.signed_out_url,),
        scopes=STAFF_SCOPES,
    )


WORKLIST_SOURCE = "worklist"
"""OHIF data source whose study list is the reading worklist (``?datasources=worklist``)."""


def _data_source(urls: ViewerUrls, *, worklist: bool = False) -> dict[str, Any]:
    # the worklist is a QIDO root of its own (studies granted to the reader's institution,
    # with their reading status); retrieval goes to the normal root either way
    qido_root = f"{urls.public_url}/worklist/dicom-web" if worklist else urls.dicomweb_root
    return {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": WORKLIST_SOURCE if worklist else "dicomweb",
        "configuration": {
            "friendlyName": "Reading worklist" if worklist else "VNA",
            "name": "vna-worklist" if worklist else "vna",
            "qidoRoot": qido_root,
            "wadoRoot": urls.dicomweb_root,
            "wadoUriRoot": urls.wado_uri_root,
            "qidoSupportsIncludeField": True,
            "supportsReject": False,
            "supportsStow": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": True,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }


def app_config(
    urls: ViewerUrls, mode: ViewerMode | str, sign_in: StaffSignIn | None = None
) -> dict[str, Any]:
    """The JSON part of OHIF's ``window.config`` for ``mode`` (OHIF 3.13 keys).

    Parameters
    ----------
    urls : ViewerUrls
        The gateway's public URL and the viewer's path.
    mode : ViewerMode or str
        ``staff`` adds the ``oidc`` client; ``share`` has none (see :func:`app_config_js`).
    sign_in : StaffSignIn, optional
        An external OIDC provider for staff; default: the embedded issuer and the public
        client of :func:`viewer_client`.
    """
    mode = ViewerMode(mode)
    config: dict[str, Any] = {
        "routerBasename": urls.router_basename(mode),
        "extensions": [],
        "modes": [],
        # OHIF's phased customization form; its onboarding tour would cover the image of a
        # patient opening a share link, and readers know a viewer: no tour
        "customizationService": {"global": {"ohif.tours": {"$set": []}}},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        # the data source is the gateway that serves the viewer: not cross-origin
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "allowMultiSelectExport": False,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "dev",  # no stack traces for patients opening a share link
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "dicomweb",
        "dataSources": [_data_source(urls)],
    }
    if mode is ViewerMode.STAFF:
        config["dataSources"].append(_data_source(urls, worklist=True))
        client = viewer_client(urls)
        config["oidc"] = [
            {
                "authority": sign_in.authority if sign_in else urls.public_url,
                "client_id": sign_in.client_id if sign_in else client.client_id,
                "redirect_uri": urls.callback_url,
                "response_type": "code",  # authorization code; oidc-client-ts adds PKCE
                "scope": sign_in.scope if sign_in else " ".join(client.scopes),
                "post_logout_redirect_uri": client.post_logout_redirect_uris[0],
                # renewal uses the refresh token (the issuer keeps no sign-in session
                # for a silent prompt=none request to ride on)
                "automaticSilentRenew": True,
                "revokeAccessTokenOnSignout": True,
                # only the refresh token: access tokens are self-contained and live five
                # minutes, the issuer refuses to revoke them (RFC 7009
                # unsupported_token_type) and oidc-client-ts abandons the sign-out on
                # that refusal, before it reaches the issuer's logout endpoint
                "revokeTokenTypes": ["refresh_token"],
            }
        ]
    return config


_HEADER = "/* Generated by vna (viewer/config.py) for {url}, variant {mode}. Do not edit. */\n"

# The share variant: window.config is a function (OHIF's appInit calls it with the
# services manager before registering services). It wraps registerServices so that the
# moment userAuthenticationService exists, its getAuthorizationHeader reads the token from
# sessionStorage on every call. The config keys are also copied onto the function, because
# a few OHIF modules read window.config.<key> directly (routerBasename, dataSources).
_SHARE_JS = """\
window.config = (function () {{
  'use strict';
  var config = {config};
  var tokenKey = {key};
  function authorizationHeader() {{
    var token = window.sessionStorage.getItem(tokenKey);
    return token ? {{ Authorization: 'Bearer ' + token }} : {{}};
  }}
  function shareConfig(context) {{
    var services = context.servicesManager;
    var register = services.registerServices.bind(services);
    services.registerServices = function (list) {{
      var result = register(list);
      var auth = services.services.userAuthenticationService;
      if (auth && !auth.vnaShareToken) {{
        auth.vnaShareToken = true;
        auth.setServiceImplementation({{ getAuthorizationHeader: authorizationHeader }});
      }}
      return result;
    }};
    return config;
  }}
  Object.keys(config).forEach(function (name) {{
    shareConfig[name] = config[name];
  }});
  return shareConfig;
}})();
"""


def app_config_js(
    urls: ViewerUrls, mode: ViewerMode | str, sign_in: StaffSignIn | None = None
) -> str:
    """The ``app-config.js`` script for ``mode``: ``window.config = ...``."""
    mode = ViewerMode(mode)
    header = _HEADER.format(url=urls.viewer_url.replace("*/", ""), mode=mode.value)
    config = json.dumps(app_config(urls, mode, sign_in), indent=2)
    if mode is ViewerMode.STAFF:
        return f"{header}window.config = {config};\n"
    return header + _SHARE_JS.format(config=config, key=json.dumps(SHARE_TOKEN_KEY))
