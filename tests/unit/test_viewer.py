"""The viewer package: app-config generation, the bundle's rewrite for /viewer, fetching.

A small synthetic ``dist/`` with the same markers as OHIF 3.13's build stands in for the
real bundle (which the integration test uses).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.unit.support import INDEX, make_dist
from viewer.bundle import (
    IMMUTABLE,
    REVALIDATE,
    Bundle,
    BundleError,
    OhifRelease,
    cache_control,
    content_type,
)
from viewer.config import (
    SHARE_TOKEN_KEY,
    WORKLIST_SOURCE,
    StaffSignIn,
    ViewerMode,
    ViewerUrls,
    app_config,
    app_config_js,
    viewer_client,
)
from viewer.fetch import extract_dist, fetch, install_tarball, integrity_of, is_current

URLS = ViewerUrls.for_gateway("https://vna.example.org:8443")


# -- app-config --------------------------------------------------------------------------


def test_staff_config_points_at_the_gateway_and_its_issuer() -> None:
    config = app_config(URLS, "staff")
    assert config["routerBasename"] == "/viewer"
    assert config["defaultDataSourceName"] == "dicomweb"
    source, worklist = config["dataSources"]
    assert worklist["sourceName"] == WORKLIST_SOURCE
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert source["sourceName"] == "dicomweb"
    dicomweb = source["configuration"]
    assert dicomweb["qidoRoot"] == "https://vna.example.org:8443/dicom-web"
    assert dicomweb["wadoRoot"] == "https://vna.example.org:8443/dicom-web"
    assert dicomweb["wadoUriRoot"] == "https://vna.example.org:8443/wado"
    assert dicomweb["supportsFuzzyMatching"] is True
    assert dicomweb["supportsWildcard"] is True
    assert dicomweb["imageRendering"] == "wadors"
    assert dicomweb["thumbnailRendering"] == "wadors"
    assert dicomweb["enableStudyLazyLoad"] is True
    assert dicomweb["bulkDataURI"]["enabled"] is True
    [oidc] = config["oidc"]
    assert oidc["authority"] == "https://vna.example.org:8443"
    assert oidc["client_id"] == "vna-viewer"
    assert oidc["redirect_uri"] == "https://vna.example.org:8443/viewer/callback"
    assert oidc["response_type"] == "code"
    assert oidc["scope"].split()[:1] == ["openid"]
    assert "dicom.read" in oidc["scope"].split()


def test_share_config_has_no_login_and_its_own_router_base() -> None:
    config = app_config(URLS, ViewerMode.SHARE)
    assert "oidc" not in config
    assert config["routerBasename"] == "/viewer/share"
    assert config["dataSources"] == app_config(URLS, "staff")["dataSources"][:1]


def test_urls_keep_a_reverse_proxy_path_prefix() -> None:
    urls = ViewerUrls.for_gateway("https://example.org/vna/")
    assert urls.public_url == "https://example.org/vna"
    assert urls.base_path == "/vna/viewer"
    assert urls.public_path == "/vna/viewer/"
    assert urls.callback_url == "https://example.org/vna/viewer/callback"
    assert urls.dicomweb_root == "https://example.org/vna/dicom-web"
    assert urls.config_path(ViewerMode.SHARE) == "/vna/viewer/share/app-config.js"
    assert app_config(urls, "staff")["oidc"][0]["authority"] == "https://example.org/vna"


def test_viewer_client_is_public_with_the_callback() -> None:
    client = viewer_client(URLS)
    assert client.public
    assert client.client_id == "vna-viewer"
    assert "https://vna.example.org:8443/viewer/callback" in client.redirect_uris


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        app_config(URLS, "admin")


def test_staff_script_is_the_config_as_json() -> None:
    script = app_config_js(URLS, "staff")
    body = script[script.index("window.config = ") + len("window.config = ") :].rstrip(";\n")
    assert json.loads(body) == app_config(URLS, "staff")


NODE_HARNESS = """
const storage = new Map([[%(key)s, 'token-123']]);
global.window = { sessionStorage: { getItem: (k) => storage.get(k) ?? null } };
%(script)s
const registered = {};
let implementation = null;
const servicesManager = {
  services: registered,
  registerServices(list) {
    registered.userAuthenticationService = {
      setServiceImplementation(impl) { implementation = impl; },
    };
  },
};
const config = window.config({ servicesManager });
servicesManager.registerServices([]);
const first = implementation.getAuthorizationHeader();
storage.set(%(key)s, 'token-456');  // a refreshed token is read on the next request
const second = implementation.getAuthorizationHeader();
storage.delete(%(key)s);
const none = implementation.getAuthorizationHeader();
console.log(JSON.stringify({
  basename: window.config.routerBasename, oidc: 'oidc' in config,
  sources: window.config.dataSources.length, first, second, none,
}));
"""


def test_share_script_hands_the_session_token_to_ohif(tmp_path: Path) -> None:
    """Run the generated script in node against a stand-in of OHIF's services manager."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (deploy/install-system.sh installs npm with it)")
    script = app_config_js(URLS, "share")
    assert "token-" not in script and "?token" not in script
    harness = tmp_path / "harness.js"
    key = json.dumps(SHARE_TOKEN_KEY)
    harness.write_text(NODE_HARNESS % {"key": key, "script": script})
    done = subprocess.run([node, str(harness)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {
        "basename": "/viewer/share",
        "oidc": False,
        "sources": 1,
        "first": {"Authorization": "Bearer token-123"},
        "second": {"Authorization": "Bearer token-456"},
        "none": {},
    }


# -- bundle ------------------------------------------------------------------------------


def test_index_is_rewritten_for_the_viewer_path(tmp_path: Path) -> None:
    bundle = Bundle.load(make_dist(tmp_path / "dist"), URLS)
    staff = (bundle.page(ViewerMode.STAFF).body or b"").decode()
    share = (bundle.page(ViewerMode.SHARE).body or b"").decode()
    assert 'src="/viewer/app-config.js"' in staff
    assert 'src="/viewer/share/app-config.js"' in share
    for page in (staff, share):
        assert 'window.PUBLIC_URL="/viewer/"' in page
        assert 'window.PUBLIC_LIB_URL="/viewer/${component}/"' in page
        assert 'src="/viewer/app.bundle.0f6159c501addfe9.js"' in page
        assert 'href="/viewer/app.bundle.css"' in page
        assert 'content="/viewer/assets/mstile-144x144.png"' in page
        assert "init-service-worker" not in page
        assert re.search(r'(src|href|content)="/(?!viewer/)', page) is None


def test_csp_allows_exactly_the_inline_scripts_of_the_page(tmp_path: Path) -> None:
    bundle = Bundle.load(make_dist(tmp_path / "dist"), URLS)
    page = (bundle.page(ViewerMode.STAFF).body or b"").decode()
    scripts = re.findall(r"<script>(.*?)</script>", page)
    assert len(scripts) == 2
    directives = dict(d.split(" ", 1) for d in bundle.csp.split("; "))
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in directives["script-src"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert "'wasm-unsafe-eval'" in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'"
    assert "https://vna.example.org:8443" in directives["connect-src"]


def test_runtimes_stylesheets_and_manifest_name_the_viewer_path(tmp_path: Path) -> None:
    bundle = Bundle.load(make_dist(tmp_path / "dist"), URLS)
    for name in ("app.bundle.0f6159c501addfe9.js", "compute.bundle.0fc3a3ee85296cf2.js"):
        asset = bundle.asset(name)
        assert asset is not None and asset.body is not None
        assert b'__webpack_require__.p = "/viewer/";' in asset.body
        assert asset.cache_control == IMMUTABLE
    css = bundle.asset("app.bundle.css")
    assert css is not None and css.body == b"@font-face{src:url(/viewer/a34f9d1faa5f3315.woff2)}"
    assert css.cache_control == REVALIDATE
    manifest = bundle.asset("manifest.json")
    assert manifest is not None and manifest.body is not None
    assert json.loads(manifest.body) == {
        "start_url": "/viewer/",
        "icons": [{"src": "/viewer/assets/a.png"}],
    }
    chunk = bundle.asset("1180.bundle.762993518ea30ae3.js")  # no runtime: served from disk
    assert chunk is not None and chunk.body is None and chunk.path is not None
    wasm = bundle.asset("34b1e6b1deb5828e.wasm")
    assert wasm is not None and wasm.content_type == "application/wasm"
    assert wasm.cache_control == IMMUTABLE


def test_asset_refuses_paths_outside_and_withheld_files(tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist")
    (tmp_path / "secret.txt").write_text("no")
    (dist / "link.txt").symlink_to(tmp_path / "secret.txt")
    bundle = Bundle.load(dist, URLS)
    for path in ("../secret.txt", "assets/../../secret.txt", "/etc/passwd", "link.txt", ""):
        assert bundle.asset(path) is None, path
    assert bundle.asset("sw.js") is None
    assert bundle.asset("index.html") is None  # the page is served rewritten, per mode
    assert bundle.asset("missing.js") is None
    png = bundle.asset("assets/a.png")
    assert png is not None and png.content_type == "image/png"


def test_a_different_build_is_refused(tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist")
    (dist / "index.html").write_text(INDEX.replace('src="/app-config.js"', 'src="config.js"'))
    with pytest.raises(BundleError):
        Bundle.load(dist, URLS)
    with pytest.raises(BundleError, match="make install"):
        Bundle.load(tmp_path / "nowhere", URLS)


def test_content_types_and_caching() -> None:
    assert content_type("a.wasm") == "application/wasm"
    assert content_type("x.bundle.1234567890abcdef.js") == "text/javascript; charset=utf-8"
    assert content_type("f.woff2") == "font/woff2"
    assert content_type("noext") is None
    assert cache_control("app.bundle.0f6159c501addfe9.js") == IMMUTABLE
    assert cache_control("1602.css") == REVALIDATE
    assert cache_control("index.html") == REVALIDATE


# -- fetch -------------------------------------------------------------------------------


def make_tarball(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return path


def release_for(tarball: Path) -> OhifRelease:
    return OhifRelease("@ohif/app", "0.0.1-test", integrity_of(tarball))


def test_integrity_is_npm_sri_sha512(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    expected = base64.b64encode(hashlib.sha512(b"abc").digest()).decode()
    assert integrity_of(path) == f"sha512-{expected}"


def test_install_unpacks_dist_only_and_is_idempotent(tmp_path: Path) -> None:
    tarball = make_tarball(
        tmp_path / "app.tgz",
        {
            "package/package.json": b"{}",
            "package/dist/index.html": b"<html>",
            "package/dist/assets/a.png": b"png",
        },
    )
    release = release_for(tarball)
    dest = tmp_path / "ohif"
    assert not is_current(dest, release)
    install_tarball(tarball, dest, release)
    assert is_current(dest, release)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["dist/assets/a.png", "dist/index.html", "release.json"]
    assert (dest / "dist" / "index.html").read_bytes() == b"<html>"
    # current: fetch() returns at once, without npm
    assert fetch(dest, release) is False
    # a different pin is not current
    assert not is_current(dest, OhifRelease("@ohif/app", "0.0.2", release.integrity))


def test_a_tampered_tarball_unpacks_nothing(tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / "app.tgz", {"package/dist/index.html": b"<html>"})
    pinned = OhifRelease("@ohif/app", "0.0.1", "sha512-" + base64.b64encode(b"x" * 64).decode())
    with pytest.raises(BundleError, match="integrity"):
        install_tarball(tarball, tmp_path / "ohif", pinned)
    assert not (tmp_path / "ohif").exists()


@pytest.mark.parametrize(
    "members,symlink",
    [
        ({"package/dist/../../evil": b"x", "package/dist/index.html": b"i"}, None),
        ({"package/dist/index.html": b"i"}, "package/dist/link"),
        ({"package/README.md": b"no dist"}, None),
    ],
)
def test_unsafe_or_wrong_tarballs_are_refused(
    tmp_path: Path, members: dict[str, bytes], symlink: str | None
) -> None:
    tarball = make_tarball(tmp_path / "app.tgz", members, symlink)
    with pytest.raises(BundleError):
        extract_dist(tarball, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_staff_have_the_reading_worklist_as_a_second_data_source() -> None:
    urls = ViewerUrls.for_gateway("https://vna.example")
    staff = {s["sourceName"]: s["configuration"] for s in app_config(urls, "staff")["dataSources"]}
    share = [s["sourceName"] for s in app_config(urls, "share")["dataSources"]]
    assert share == ["dicomweb"]  # a share link has no worklist
    assert staff[WORKLIST_SOURCE]["qidoRoot"] == "https://vna.example/worklist/dicom-web"
    assert staff[WORKLIST_SOURCE]["wadoRoot"] == staff["dicomweb"]["wadoRoot"]


def test_staff_can_sign_in_at_an_external_provider() -> None:
    urls = ViewerUrls.for_gateway("https://vna.example")
    sign_in = StaffSignIn("https://keycloak.example/realms/region", "ohif")
    [oidc] = app_config(urls, "staff", sign_in)["oidc"]
    assert oidc["authority"] == "https://keycloak.example/realms/region"
    assert oidc["client_id"] == "ohif"
    assert oidc["redirect_uri"] == "https://vna.example/viewer/callback"
    assert "oidc" not in app_config(urls, "share", sign_in)


def test_the_external_sign_in_needs_both_settings() -> None:
    from dicomweb.api import GatewaySettings

    with pytest.raises(ValueError, match="viewer_oidc_client_id"):
        GatewaySettings(viewer_oidc_authority="https://keycloak.example/realms/region")
