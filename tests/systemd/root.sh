#!/usr/bin/env bash
# Prints the path of a minimal Debian root with systemd, made by debootstrap once and cached.
#
# The cache lives outside the repository, so a fresh clone reuses it:
# $LOOP_TEST_CACHE, else $XDG_CACHE_HOME/loop-orchestrator-tests, else
# ~/.cache/loop-orchestrator-tests. A root is keyed by a hash of everything that shapes it
# (suite, variant, package list, layout), so changing the list builds a new one; it is
# built in a temporary folder and renamed into place when complete, under a lock, so an
# interrupted or concurrent build never leaves a half root behind. Roots of the same suite
# and other keys are removed once a new one is complete. Callers copy the root before booting it.
set -euo pipefail

# Debian 12 (systemd 252), the oldest systemd the units are written for. Another suite
# (trixie: systemd 257) checks a newer one: LOOP_TEST_DEBIAN_SUITE=trixie.
suite=${LOOP_TEST_DEBIAN_SUITE:-bookworm}
mirror=${LOOP_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# systemd-sysv: /sbin/init; dbus: systemd-analyze security asks the manager over D-Bus;
# procps: /bin/kill (the unit's ExecReload=, a dependency of the package) and pgrep.
packages=systemd,systemd-sysv,dbus,procps

cache=${LOOP_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loop-orchestrator-tests}
# Bump `layout` when a change here changes what a root holds.
layout=1
key=$(echo "$suite minbase $packages $layout" | sha256sum | cut -c1-16)
root=$cache/debian-$suite-$key

mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [ ! -x "$root/sbin/init" ]; then
    tmp=$(mktemp -d "$cache/building.XXXXXX")
    chmod 0755 "$tmp" # it becomes the root's "/", which every user must traverse
    echo "building a Debian $suite root in $root (once; a minute or two)" >&2
    if ! timeout 900 debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" \
        >"$tmp.log" 2>&1; then
        tail -20 "$tmp.log" >&2
        rm -rf "$tmp"
        exit 1
    fi
    # Drop what debootstrap leaves for apt: the root is never upgraded, only copied.
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
    mv "$tmp" "$root"
    rm -f "$tmp.log"
    for old in "$cache/debian-$suite"-*; do
        [ "$old" = "$root" ] || rm -rf "$old"
    done
fi
echo "$root"
