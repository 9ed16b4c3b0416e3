"""The prebuilt OHIF bundle, made to run below a path prefix, and the headers it is served with.

OHIF's npm package ships ``dist/`` built for the root path: ``index.html`` names its
scripts ``/app.bundle....js``, sets ``window.PUBLIC_URL = "/"``, the webpack runtime of
the app and of each web worker has ``__webpack_require__.p = "/"`` (chunks, workers and
wasm codecs load from there), and the stylesheet loads its font from ``url(/...)``.
:meth:`Bundle.load` rewrites exactly those few files in memory for the viewer's public
path, so the files on disk stay as npm published them (and verifiable); everything else
is served from disk as is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from viewer.config import ViewerMode, ViewerUrls

__all__ = [
    "OHIF",
    "Asset",
    "Bundle",
    "BundleError",
    "OhifRelease",
    "content_type",
    "default_bundle_dir",
    "security_headers",
]


@dataclass(frozen=True, slots=True)
class OhifRelease:
    """The pinned npm package: name, version and its registry ``dist.integrity``."""

    package: str
    version: str
    integrity: str  # "sha512-<base64>", as `npm view PACKAGE@VERSION dist.integrity` prints

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


# To upgrade: change the version and paste `npm view @ohif/app@NEW dist.integrity`.
OHIF = OhifRelease(
    package="@ohif/app",
    version="3.13.2",
    integrity="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==",
)


class BundleError(Exception):
    """The OHIF bundle is missing or is not what this code expects."""


def default_bundle_dir() -> Path:
    """Where ``python -m viewer.fetch`` unpacks OHIF's ``dist/`` (not committed)."""
    return Path(__file__).resolve().parent / "ohif" / "dist"


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webapp": "application/x-web-app-manifest+json",
    ".map": "application/json",
    ".wasm": "application/wasm",  # required by WebAssembly.instantiateStreaming
    ".onnx": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".jsonc": "application/json",
}


def content_type(name: str) -> str | None:
    """The media type the viewer serves a file name with; None for unknown extensions."""
    return _TYPES.get(PurePosixPath(name).suffix.lower())


# Names carrying a content hash (`app.bundle.0f6159c501addfe9.js`, `34b1e6b1deb5828e.wasm`)
# never change content: browsers may keep them for a year without asking again.
_HASHED = re.compile(r"(^|[./])[0-9a-f]{16}\.[a-z0-9]+$")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"  # keep, but ask (ETag / Last-Modified) before each use


def cache_control(name: str) -> str:
    return IMMUTABLE if _HASHED.search(name) else REVALIDATE


# Files OHIF ships that the gateway does not serve: hosting-provider rules, and the
# service worker (an offline cache of a medical viewer and its tokens' answers is not
# wanted; its registration script is also dropped from index.html).
_WITHHELD = frozenset(
    {"_headers", "_redirects", "serve.json", "sw.js", "init-service-worker.js", "google.js"}
)


@dataclass(frozen=True, slots=True)
class Asset:
    """One answer of the viewer: from memory (rewritten) or a file on disk."""

    content_type: str
    cache_control: str
    body: bytes | None = None
    path: Path | None = None
    etag: str | None = None


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_SERVICE_WORKER_TAG = re.compile(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>')
_CONFIG_SRC = 'src="/app-config.js"'
_PUBLIC_URL = 'window.PUBLIC_URL="/"'
_WEBPACK_PUBLIC_PATH = b'__webpack_require__.p = "/";'


def rewrite_index(html: str, urls: ViewerUrls, mode: ViewerMode) -> str:
    """OHIF's ``index.html`` for the viewer's public path and the ``mode``'s config.

    Raises
    ------
    BundleError
        When the markers this rewrite relies on are missing (a different OHIF build).
    """
    base = urls.public_path
    for marker in (_CONFIG_SRC, _PUBLIC_URL):
        if marker not in html:
            raise BundleError(f"OHIF index.html has no {marker!r}: not the expected build")
    html = _SERVICE_WORKER_TAG.sub("", html)
    # PUBLIC_LIB_URL: where lazily loaded libraries (microscopy) are; OHIF defaults it to
    # a path relative to the page, which is wrong on deep routes such as /viewer/share/...
    public = f"window.PUBLIC_URL={json.dumps(base)}"
    lib = f"window.PUBLIC_LIB_URL={json.dumps(base + '${component}/')}"
    html = html.replace(_PUBLIC_URL, f"{public},{lib}", 1).replace(_PUBLIC_URL, public)
    for attribute in ("href", "src", "content"):
        html = html.replace(f'{attribute}="/', f'{attribute}="{base}')
    return html.replace(f'src="{base}app-config.js"', f'src="{urls.config_path(mode)}"')


def inline_script_hashes(html: str) -> tuple[str, ...]:
    """CSP source expressions for the inline scripts of a page (instead of 'unsafe-inline')."""
    return tuple(_csp_hash(script) for script in _INLINE_SCRIPT.findall(html))


def rewrite_public_path(script: bytes, urls: ViewerUrls) -> bytes:
    """Point a webpack runtime's public path (chunks, workers, wasm) at the viewer."""
    target = b"__webpack_require__.p = " + json.dumps(urls.public_path).encode() + b";"
    return script.replace(_WEBPACK_PUBLIC_PATH, target)


def rewrite_stylesheet(css: bytes, urls: ViewerUrls) -> bytes:
    return css.replace(b"url(/", b"url(" + urls.public_path.encode())


def rewrite_manifest(document: bytes, urls: ViewerUrls) -> bytes:
    """The web app manifest's icons and start URL below the viewer's path."""
    manifest = json.loads(document)

    def fix(value: object) -> object:
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str) and value.startswith("/"):
            return urls.public_path + value[1:]
        return value

    return json.dumps(fix(manifest), indent=2).encode()


def content_security_policy(urls: ViewerUrls, script_hashes: tuple[str, ...]) -> str:
    """The CSP the viewer runs under; what each OHIF part needs is said beside it.

    * scripts: its own files, the two inline bootstrap scripts of index.html (by hash),
      and 'wasm-unsafe-eval' for the image codecs (OpenJPEG, CharLS, libjpeg-turbo, HTJ2K),
      which are WebAssembly compiled in the page and in workers; no 'unsafe-eval';
    * workers: module workers from its own files (image decoding, histograms, compute);
    * styles: 'unsafe-inline', because React and the UI kit set style attributes;
    * connections: the gateway (DICOMweb, and the issuer's discovery and token endpoints);
    * frames: the OIDC client's silent renew page is on the gateway too;
    * nobody may frame the viewer, no plugins, no <base> tricks.
    """
    gateway = urls.origin
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *script_hashes, "'wasm-unsafe-eval'"],
        "worker-src": ["'self'", "blob:"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "media-src": ["'self'", "blob:"],
        "connect-src": ["'self'", gateway, "data:", "blob:"],
        "frame-src": ["'self'", gateway],
        "manifest-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'", gateway],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(
        name + " " + " ".join(dict.fromkeys(sources)) for name, sources in directives.items()
    )


def security_headers(csp: str) -> dict[str, str]:
    """Headers on every viewer answer (documents and worker scripts both carry the CSP)."""
    return {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",  # no viewer URL (study UIDs) leaves in a Referer
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


@dataclass(frozen=True, slots=True)
class Bundle:
    """OHIF's ``dist/`` prepared for one public path: what :meth:`asset` answers."""

    root: Path
    urls: ViewerUrls
    csp: str
    _pages: dict[ViewerMode, Asset] = field(repr=False)
    _rewritten: dict[str, Asset] = field(repr=False)

    @classmethod
    def load(cls, root: Path, urls: ViewerUrls) -> Bundle:
        """Read ``root`` (OHIF's ``dist/``) and rewrite the files that name the root path.

        Raises
        ------
        BundleError
            If ``root`` has no ``index.html`` or is not the OHIF build this code knows.
        """
        root = root.resolve()
        index = root / "index.html"
        if not index.is_file():
            raise BundleError(f"no OHIF bundle at {root} (run `make install`)")
        html = index.read_text(encoding="utf-8")
        pages: dict[ViewerMode, Asset] = {}
        hashes: list[str] = []
        for mode in ViewerMode:
            page = rewrite_index(html, urls, mode)
            hashes.extend(inline_script_hashes(page))
            body = page.encode()
            pages[mode] = Asset(content_type("x.html") or "", REVALIDATE, body, etag=_etag(body))
        rewritten: dict[str, Asset] = {}
        runtimes = 0
        for path in sorted(root.iterdir()):
            name = path.name
            if path.suffix == ".js" and name not in _WITHHELD:
                original = path.read_bytes()
                if _WEBPACK_PUBLIC_PATH not in original:
                    continue
                body = rewrite_public_path(original, urls)
                runtimes += 1
            elif path.suffix == ".css":
                body = rewrite_stylesheet(path.read_bytes(), urls)
            elif name == "manifest.json":
                body = rewrite_manifest(path.read_bytes(), urls)
            else:
                continue
            kind = content_type(name) or "application/octet-stream"
            rewritten[name] = Asset(kind, cache_control(name), body, etag=_etag(body))
        if not runtimes:
            raise BundleError(f"no webpack runtime with a root public path in {root}")
        csp = content_security_policy(urls, tuple(hashes))
        return cls(root, urls, csp, pages, rewritten)

    def page(self, mode: ViewerMode) -> Asset:
        """``index.html`` for ``mode``: every route of the single-page app answers with it."""
        return self._pages[mode]

    def asset(self, relative: str) -> Asset | None:
        """The file at ``relative`` (below ``dist/``), or None when there is no such file.

        Paths that leave ``dist/`` (``..``, absolute, symlinks out) and withheld files
        are None, exactly like missing ones.
        """
        parts = PurePosixPath(relative).parts
        if not parts or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        name = "/".join(parts)
        if name in self._rewritten:
            return self._rewritten[name]
        if name in _WITHHELD or name == "index.html":
            return None
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        kind = content_type(name) or "application/octet-stream"
        return Asset(kind, cache_control(name), path=path)
