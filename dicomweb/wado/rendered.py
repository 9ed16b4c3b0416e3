"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.4/5, 8.3.5), via Orthanc.

Rendering needs decoding, windowing and image encoding, which Orthanc's DICOMweb plugin
does; the gateway decides access, picks the instance and streams the image through.

A rendered study or series asked for as an image type (``image/jpeg``: what
dicomweb-client's ``retrieve_series_rendered`` sends) is one image, the first renderable
instance, as Orthanc's DICOMweb plugin answers; ``multipart/related; type="image/jpeg"``
gets every renderable instance, one part each.
Paths sent to Orthanc are built from catalog UIDs, never from the request path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from dicomweb.http.middleware import STREAMING
from dicomweb.http.multipart import Multipart
from dicomweb.http.orthanc import OrthancClient, OrthancError
from dicomweb.wado.frames import instance_path, stream_from_orthanc
from query.api import StoredInstance
from security.api import InvalidInput, NotAcceptable, NotFound

__all__ = [
    "THUMBNAIL_VIEWPORT",
    "negotiate_image",
    "negotiate_rendered_many",
    "rendered_params",
    "representative",
    "send_rendered",
    "send_rendered_first",
    "send_rendered_many",
]
# a rendered study or series as one image tries at most this many instances (an SR or a
# SEG Orthanc cannot draw is skipped) before answering 406
FIRST_ATTEMPTS = 16

THUMBNAIL_VIEWPORT = "128,128"
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")
# PS3.18 8.3.5.1 parameters Orthanc's plugin implements; others are ignored
_PASSED = ("viewport", "quality", "window")
_NUMBER_CHARS = frozenset("0123456789.,-")
_WINDOW_CHARS = _NUMBER_CHARS | frozenset("linearsigmoidLINEARSIGMOID_")


def _offers(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of ``Accept`` with q > 0, best first (ties in the client's order),
    each with its parameters (names lower-cased, quotes removed)."""
    offers = []
    for position, item in enumerate(accept.split(",")):
        media, *rest = (p.strip() for p in item.split(";"))
        params = {}
        for param in rest:
            name, _, value = param.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0:
            offers.append((-quality, position, media.lower(), params))
    return [(media, params) for _q, _p, media, params in sorted(offers, key=lambda o: o[:2])]


def negotiate_image(accept: str | None) -> str:
    """The image type to render: the first of ``Accept`` Orthanc produces (JPEG default).

    Raises
    ------
    NotAcceptable
        When the client accepts none of image/jpeg, image/png, image/gif.
    """
    if not accept:
        return "image/jpeg"
    for media, _params in _offers(accept):
        if media in _IMAGE_TYPES:
            return media
        if media in ("*/*", "image/*"):
            return "image/jpeg"
    raise NotAcceptable("rendered images are image/jpeg, image/png or image/gif")


def negotiate_rendered_many(accept: str | None) -> tuple[str, bool]:
    """The image type for a rendered study or series, and whether to answer multipart.

    ``multipart/related; type="image/..."`` asks for every instance rendered; a bare image
    type (or ``*/*``, or no Accept) for one image, as dicomweb-client's
    ``retrieve_series_rendered`` and Orthanc's DICOMweb plugin expect.

    Raises
    ------
    NotAcceptable
        When the client accepts none of these.
    """
    if not accept:
        return "image/jpeg", False
    for media, params in _offers(accept):
        if media == "multipart/related":
            part = params.get("type", "").lower()
            if part in _IMAGE_TYPES:
                return part, True
        elif media in _IMAGE_TYPES:
            return media, False
        elif media in ("*/*", "image/*"):
            return "image/jpeg", False
    raise NotAcceptable(
        "rendered studies and series are image/jpeg, image/png or image/gif (one image), "
        'or multipart/related; type="image/jpeg" (or png, gif) for every instance'
    )


def rendered_params(query: Mapping[str, str], *, default_viewport: str | None) -> dict[str, str]:
    """The query parameters passed to Orthanc, checked (PS3.18 8.3.5.1.2, 8.3.5.1.3)."""
    out: dict[str, str] = {}
    for name in _PASSED:
        value = query.get(name)
        if value is None:
            continue
        allowed = _WINDOW_CHARS if name == "window" else _NUMBER_CHARS
        if not value or len(value) > 100 or not set(value) <= allowed:
            raise InvalidInput(f"bad {name} parameter: {value!r}")
        out[name] = value
    if "quality" in out and not (out["quality"].isdigit() and 1 <= int(out["quality"]) <= 100):
        raise InvalidInput("quality is an integer from 1 to 100")
    if default_viewport is not None:
        out.setdefault("viewport", default_viewport)
    return out


def representative(items: Sequence[StoredInstance]) -> StoredInstance:
    """The instance a study or series thumbnail shows: the middle one of the first series."""
    first_series = [i for i in items if i.series_uid == items[0].series_uid]
    return first_series[len(first_series) // 2]


async def send_rendered(
    request: web.Request,
    orthanc: OrthancClient,
    item: StoredInstance,
    *,
    frame: int | None,
    media_type: str,
    params: dict[str, str],
) -> tuple[web.StreamResponse, int]:
    """Render one instance (or one frame of it) through Orthanc and stream the image."""
    path = "/dicom-web" + instance_path(item)
    if frame is not None:
        path += f"/frames/{frame}"
    path += "/rendered"

    def refuse(status: int, text: str) -> Exception:
        if status == 404:
            return NotFound("no such frame" if frame is not None else "no such instance")
        if status == 400:
            return InvalidInput(f"the rendering parameters were refused: {text[:200]}")
        if status == 406 or status == 415:
            return NotAcceptable(f"this instance cannot be rendered as {media_type}")
        return OrthancError(f"Orthanc could not render the instance ({status})", status)

    return await stream_from_orthanc(
        request, orthanc, path, accept=media_type, params=params, refuse=refuse
    )


async def send_rendered_many(
    request: web.Request,
    orthanc: OrthancClient,
    items: Sequence[StoredInstance],
    *,
    media_type: str,
    params: dict[str, str],
) -> tuple[web.StreamResponse, int]:
    """Rendered study or series (PS3.18 10.4.1.1.4): one rendered image per instance, as
    ``multipart/related``, each rendered by Orthanc and sent as soon as it is ready.

    Instances Orthanc cannot render (an SR, a SEG without pixels it can draw) are left out,
    as the standard allows for non-image instances; if none renders, the answer is 406.
    """
    message = Multipart(media_type)
    response: web.StreamResponse | None = None
    sent = 0
    for item in items:
        status, _headers, body = await orthanc.request(
            "GET",
            "/dicom-web" + instance_path(item) + "/rendered",
            headers={"Accept": media_type},
            params=params,
        )
        if status != 200:
            continue  # not renderable: skipped
        first = response is None
        if response is None:
            response = web.StreamResponse(headers={"Content-Type": message.content_type})
            await response.prepare(request)
            request[STREAMING] = True
        await response.write(message.head(first=first) + body)
        sent += len(body)
    if response is None:
        raise NotAcceptable(f"nothing here can be rendered as {media_type}")
    await response.write(message.end())
    await response.write_eof()
    return response, sent


async def send_rendered_first(
    request: web.Request,
    orthanc: OrthancClient,
    items: Sequence[StoredInstance],
    *,
    media_type: str,
    params: dict[str, str],
) -> tuple[web.StreamResponse, int]:
    """Rendered study or series as one image: the first instance (series by UID, then
    Instance Number) that Orthanc can render, as Orthanc's DICOMweb plugin answers the
    same resource; instances that cannot be rendered (SR, ...) are skipped."""
    for item in items[:FIRST_ATTEMPTS]:
        status, _headers, body = await orthanc.request(
            "GET",
            "/dicom-web" + instance_path(item) + "/rendered",
            headers={"Accept": media_type},
            params=params,
        )
        if status == 200:
            return web.Response(body=body, headers={"Content-Type": media_type}), len(body)
    raise NotAcceptable(
        f"none of the first {FIRST_ATTEMPTS} instances here can be rendered as {media_type}"
    )
