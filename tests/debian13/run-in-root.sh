#!/usr/bin/env bash
# Run `make test` of a fresh clone inside a Debian 13 (trixie) root, as CI does (root, CI=true,
# no standard input). Usage, as root on a Debian host:
#
#   tests/debian13/run-in-root.sh ROOT SOURCE [BRANCH]
#
# ROOT    the root directory, made with debootstrap when it is missing (e.g. /srv/trixie)
# SOURCE  what to `git clone` (a path or URL), BRANCH its branch (default: its HEAD)
#
# Idempotent: an existing root is reused (packages installed by an earlier run stay, as on a
# CI machine that is kept), the clone is made anew each time, the mounts go away on exit.
# Environment: MIRROR (default: the host's first Debian mirror), SUITE (default trixie),
# TARGET (default `test`; e.g. `install` or `integration PYTEST_ARGS=-k qido`).
set -euo pipefail

root=${1:?usage: $0 ROOT SOURCE [BRANCH]}
source=${2:?usage: $0 ROOT SOURCE [BRANCH]}
branch=${3:-}
suite=${SUITE:-trixie}
target=${TARGET:-test}
[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap, mount and chroot need it)" >&2; exit 1; }

host_mirror() {
    # deb822 sources first (Debian 12's default), then one-line sources
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -v -- '-security' | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${MIRROR:-$(host_mirror)}

if [ ! -e "$root/.vna-root-ready" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
    echo "creating the $suite root in $root from $mirror"
    debootstrap --variant=minbase --include=ca-certificates,git,make "$suite" "$root" "$mirror"
    touch "$root/.vna-root-ready"
fi

# what reaches the registries from here must reach them from inside too: extra CA
# certificates (a TLS-inspecting egress), apt proxy settings, pip and npm configuration
mkdir -p "$root/usr/local/share/ca-certificates"
cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
cp /etc/hosts "$root/etc/hosts"
for f in /etc/apt/apt.conf.d/*; do
    grep -qi 'proxy' "$f" 2>/dev/null && cp "$f" "$root/etc/apt/apt.conf.d/"
done
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
for f in /etc/npmrc /usr/etc/npmrc; do
    [ -f "$f" ] && mkdir -p "$root$(dirname "$f")" && cp "$f" "$root$f"
done
[ -f "$HOME/.npmrc" ] && cp "$HOME/.npmrc" "$root/root/.npmrc"
# no service starts inside the root (orthanc and postgresql packages try at install)
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
    done
}
trap cleanup EXIT
mount_in() {  # mount_in TYPE|--bind SOURCE DIR
    mkdir -p "$root$3"
    mountpoint -q "$root$3" && return 0
    if [ "$1" = --bind ]; then mount --bind "$2" "$root$3"; else mount -t "$1" "$2" "$root$3"; fi
    mounted+=("$root$3")
}
mount_in proc proc /proc
mount_in sysfs sysfs /sys
mount_in --bind /dev /dev
mount_in --bind /dev/pts /dev/pts
mount_in tmpfs tmpfs /dev/shm
mount_in tmpfs tmpfs /tmp

chroot "$root" update-ca-certificates >/dev/null

clone=/root/vna
rm -rf "$root$clone"
git clone -q ${branch:+--branch "$branch"} "$source" "$root$clone"
git -C "$root$clone" log -1 --format='testing %H %s'

# the environment CI has: CI=true, no stdin; pip/TLS variables that name files in the root
env_args=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    LANG=C.UTF-8 CI=true)
while IFS='=' read -r name value; do
    case $name in
        PIP_* | SSL_CERT_FILE | SSL_CERT_DIR | REQUESTS_CA_BUNDLE | CURL_CA_BUNDLE | NODE_EXTRA_CA_CERTS)
            # a value naming a path missing in the root (a host-only wheel cache) is left out
            if [[ $value == /* && ! -e $root$value ]]; then continue; fi
            env_args+=("$name=$value") ;;
    esac
done < <(env)

# shellcheck disable=SC2086 # TARGET may carry make variables
chroot "$root" /usr/bin/env -i "${env_args[@]}" \
    bash -c "cd $clone && make $target" </dev/null
