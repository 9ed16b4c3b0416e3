"""Entry script loaded by Orthanc's Python plugin: the only module that imports ``orthanc``.

Orthanc runs the system Python; the project's virtual environment was built from that same
interpreter, so its site-packages (named in the generated configuration) load here.

This is the plugin's composition root: it injects the DIMSE handlers (``dimse.api``),
whose C-FIND / C-MOVE answers use the query model and sharing's access rule (and whose
C-STORE admission is sharing's ownership rule, as for STOW-RS), into ``archive.plugin``,
which only receives them as callables. Its path is the ``PythonScript`` of the generated
configuration (``deploy/orthanc_config.py``).
"""

import json
import site
import sys

import orthanc

_vna = json.loads(orthanc.GetConfiguration()).get("VNA", {})
# The environment's packages go first: appended after the system's dist-packages (what
# site.addsitedir does), Debian's older copies would win where both exist, e.g.
# python3-cryptography 38, whose AES key wrap is pure Python (~40 us per blob sealed or
# read, instead of ~1 us), and Orthanc would run other versions than the tests do.
_system_path = list(sys.path)
for _path in _vna.get("SitePackages", []):
    site.addsitedir(_path)
sys.path[:] = [p for p in sys.path if p not in _system_path] + _system_path
for _path in reversed(_vna.get("PythonPath", [])):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from archive.plugin import LoopbackRest, register  # noqa: E402
from compose.settings import load_settings  # noqa: E402
from dimse.api import find, move, store  # noqa: E402

_settings = load_settings(_vna["Home"])
register(
    orthanc,
    _settings,
    find=find,
    move=move,
    admit=store,
    rest=LoopbackRest.for_settings(_settings),
)
