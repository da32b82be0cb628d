#!/usr/bin/env bash
# Boots a Debian root under systemd-nspawn (no systemd needed on the host) and runs
# inside.sh there, twice:
#   manual: the binary in /usr/local/bin and the shipped unit in /etc/systemd/system,
#           the user and /srv/loop made from contrib/sysusers.d and contrib/tmpfiles.d;
#   deb:    the package installed with dpkg -i into a fresh copy of the root.
# Each boot gets its own copy of the cached root (root.sh), removed afterwards unless
# LOOP_TEST_KEEP=1. Results (TAP lines, logs, the journal) go to RESULTS.
#
#   sudo tests/systemd/run.sh BINARY DEB RESULTS     (DEB `-`: the manual part only)
#
# Needs root, systemd-nspawn (systemd-container) and debootstrap.
set -euo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin # debootstrap, systemd-nspawn

binary=$(realpath "$1")
deb=$2
[ "$deb" = - ] || deb=$(realpath "$deb")
results=$(realpath "$3")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# Each boot is bounded; inside.sh bounds each of its waits well below this.
boot_limit=${LOOP_TEST_BOOT_LIMIT:-240}

base=$("$here/root.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/loop-systemd-test.XXXXXX")
cleanup() {
    if [ "${LOOP_TEST_KEEP:-0}" = 1 ]; then
        echo "kept the roots in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

boot() { # boot PART: copy the root, lay the test in, boot until inside.sh powers off
    local part=$1 root=$work/$1
    cp -a "$base" "$root"
    install -D -m 0755 "$here/inside.sh" "$root/test/inside.sh"
    cat >"$root/etc/systemd/system/loop-test.service" <<EOF
[Unit]
Description=loop-orchestrator checks ($part)
After=multi-user.target dbus.service
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
Environment=PART=$part
ExecStart=/test/inside.sh
StandardOutput=append:/results/$part.log
StandardError=inherit
TimeoutStartSec=$((boot_limit - 30))
EOF
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    ln -s ../loop-test.service "$root/etc/systemd/system/multi-user.target.wants/loop-test.service"
    case $part in
    manual)
        install -D -m 0755 "$binary" "$root/usr/local/bin/loop-orchestrator"
        install -m 0644 "$repo"/contrib/systemd/loop-orchestrator*.service "$root/etc/systemd/system/"
        mkdir -p "$root/test/contrib"
        cp -r "$repo/contrib/sysusers.d" "$repo/contrib/tmpfiles.d" "$root/test/contrib/"
        ;;
    deb)
        install -m 0644 "$deb" "$root/test/loop-orchestrator.deb"
        ;;
    esac
    # --keep-unit and --register=no: no machined, no scope of its own, so no systemd is
    # needed on the host. --machine: unique, so that two runs at once do not share the
    # name's runtime folder. --private-network: the checks need no network.
    # --console=pipe: no terminal here (CI); the checks report through /results.
    local started=$SECONDS
    timeout -k 15 "$boot_limit" systemd-nspawn --quiet --register=no --keep-unit \
        --machine="loop-test-$part-$$" --console=pipe --private-network \
        --bind="$results:/results" -D "$root" -b \
        </dev/null >"$results/$part.console" 2>&1 || echo "systemd-nspawn ($part) exited $?" >&2
    echo "# boot $part: $((SECONDS - started)) s" >>"$results/$part.tap"
}

boot manual
[ "$deb" = - ] || boot deb
