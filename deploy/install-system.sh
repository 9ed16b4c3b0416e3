#!/usr/bin/env bash
# Install the Debian packages the archive needs, only those that are missing.
# Works on Debian 12 and 13, as root or through sudo.
set -euo pipefail

packages=(orthanc orthanc-python orthanc-dicomweb dcmtk python3-venv python3-dev)
# the viewer: npm fetches OHIF (any npm will do), chromium drives the browser tests
command -v npm >/dev/null || packages+=(npm)
packages+=(chromium chromium-driver)
# the scaled-out catalog: the tests run throwaway clusters with its initdb/pg_ctl (under
# /usr/lib/postgresql/<version>/bin, not on PATH)
packages+=(postgresql)
packages+=("$@")

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "run as root or install sudo" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# installing orthanc tries to start its service; policy-rc.d may refuse, which is harmless:
# the archive starts its own Orthanc with a generated configuration
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
