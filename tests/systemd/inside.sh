#!/usr/bin/env bash
# The checks, run inside the booted Debian root by loop-test.service (see run.sh), with
# systemctl and the journal. PART=manual: the binary and the shipped unit copied in by
# hand; PART=deb: the package installed with dpkg -i into a fresh root.
#
# Each check appends one line to /results/$PART.tap: `ok ID details` or `not ok ID
# details`; the test on the host requires every ID it expects to be `ok`. Every wait has a
# deadline. Lines starting with `#` are information (versions, figures).
set -uo pipefail

part=${PART:?PART=manual or PART=deb}
tap=/results/$part.tap
unit=loop-orchestrator.service
dir=/srv/loop
: >"$tap"

trap 'journalctl -b --no-pager -o short-monotonic >/results/$part.journal 2>&1' EXIT

pass() { echo "ok $1 ${*:2}" >>"$tap"; }
fail() { echo "not ok $1 ${*:2}" >>"$tap"; echo "FAILED $1: ${*:2}"; }
info() { echo "# $*" >>"$tap"; }
# check ID DETAILS COMMAND...: records whether COMMAND succeeds.
check() {
    local id=$1 details=$2
    shift 2
    if "$@"; then pass "$id" "$details"; else fail "$id" "$details"; fi
}
# wait_for SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds or time is up.
wait_for() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.2
    done
}
prop() { systemctl show -p "$2" --value "$1"; }
# journal_has CURSOR REGEX [MATCHES...]: whether a message since CURSOR matches REGEX.
# journald may lag behind a busy service by a second or so: callers wait for it.
journal_has() { journalctl -q --no-pager -o cat --after-cursor="$1" "${@:3}" | grep -Eq -- "$2"; }
cursor() { journalctl -q -n0 --show-cursor | sed -n 's/^-- cursor: //p'; }
# Journal lines of the unit since a cursor, as `loop-orchestrator[PID]: message`.
unit_log_since() { journalctl -q --no-pager -o short --after-cursor="$1" -u "$2"; }
# Rows of task_timing.tsv (13 columns, see the README) with a schedule, mode and status.
rows() {
    awk -F'\t' -v s="$1" -v m="$2" -v st="$3" \
        'NR > 1 && $6 == s && $8 == m && (st == "" || $10 == st)' "${4:-$dir}/task_timing.tsv" 2>/dev/null | wc -l
}
more_rows() { [ "$(rows "$1" "$2" "$3")" -gt "$4" ]; }

mode() { # mode SLUG ARGV(toml) [EXTRA]
    mkdir -p "$dir/modes"
    printf '+++\ncommand = %s\nprompt = "none"\ntimeout = "10m"\nkill_grace = "2s"\n%s\n+++\n# %s\n' \
        "$2" "${3:-}" "$1" >"$dir/modes/$1.md"
    chown -R loop:loop "$dir/modes"
}
schedules() { # schedules ENTRIES(json array body)
    cat >"$dir/schedules.json.new" <<EOF
{
  "version": 1,
  "timezone": "UTC",
  "defaults": { "overlap": "skip", "max_failures": 100 },
  "max_concurrent_cycles": 8,
  "shutdown_grace": "2s",
  "schedules": [
$1
  ]
}
EOF
    chown loop:loop "$dir/schedules.json.new"
    mv "$dir/schedules.json.new" "$dir/schedules.json"
}

info "$(systemctl --version | head -1)"

if [ "$part" = manual ]; then
    # Install by hand, as the README's manual route does.
    systemd-sysusers /test/contrib/sysusers.d/loop-orchestrator.conf
    systemd-tmpfiles --create /test/contrib/tmpfiles.d/loop-orchestrator.conf
    check setup-user "sysusers.d and tmpfiles.d made the loop user and $dir" \
        test "$(stat -c %U:%G:%a "$dir")" = loop:loop:750
    systemctl daemon-reload

    out=$(systemd-analyze verify "/etc/systemd/system/$unit" 2>&1)
    check verify "systemd-analyze verify prints nothing: ${out:-(nothing)}" test -z "$out"

    # --- 1. start: active only after READY; Type=notify; STATUS= ------------------------
    mode note '["true"]'
    # An agent's own sandbox: a user namespace with a mount namespace inside it.
    mode userns '["unshare", "--user", "--map-root-user", "--mount", "true"]'
    # A mode that ignores SIGTERM, left running by a supervisor that died (below).
    mode stubborn "[\"sh\", \"-c\", \"trap '' TERM; sleep 300\"]"
    schedules '
    { "id": "tick", "task": "t", "cron": "*/2 * * * * *", "modes": ["note"] },
    { "id": "sandbox", "task": "s", "cron": "*/2 * * * * *", "modes": ["userns"] },
    { "id": "left", "task": "l", "cron": "0 0 1 1 *", "modes": ["stubborn"] }'
    # A `run-cycle` killed while its mode runs leaves the mode's group behind. The service's
    # start reaps it before READY=1: TERM (ignored), 2 s, KILL. So READY comes 2 s after
    # the process started, and `systemctl start` must wait for it.
    runuser -u loop -- loop-orchestrator --dir $dir run-cycle --schedule left >/dev/null 2>&1 &
    wait_for 20 pgrep -u loop -x sleep >/dev/null
    wait_for 10 compgen -G "$dir/.loop-orchestrator/pids/*.json" >/dev/null
    left=$(pgrep -u loop -x sleep)
    pkill -KILL -u loop -f 'run-cycle --schedule left'
    wait
    c=$(cursor)
    t0=$(date +%s%N)
    timeout 60 systemctl start "$unit"
    took_ms=$((($(date +%s%N) - t0) / 1000000))
    # Read at once: READY=1 and STATUS= come in one datagram.
    state=$(prop $unit ActiveState)
    status=$(prop $unit StatusText)
    ready_ms=$((($(prop $unit ActiveEnterTimestampMonotonic) - $(prop $unit ExecMainStartTimestampMonotonic)) / 1000))
    check start-active "ActiveState=$state right after systemctl start" test "$state" = active
    check start-after-ready "start took $took_ms ms; active $ready_ms ms after the process started (READY after the 2 s reap); StatusText set: '$status'" \
        test "$ready_ms" -ge 1900 -a "$took_ms" -ge 1900 -a -n "$status"
    reaped_live() {
        journal_has "$c" 'serve: terminated a leftover process group .* of left/stubborn' -u $unit &&
            ! kill -0 "$left" 2>/dev/null && more_rows left stubborn interrupted 0
    }
    check start-reaped "the start ended the group a dead run-cycle left (pid $left) and wrote its rows" \
        wait_for 10 reaped_live
    check type-notify "Type=$(prop $unit Type)" test "$(prop $unit Type)" = notify
    check status-text "StatusText names the schedules and the next fire: '$status'" \
        grep -Eq '^3 schedules \(3 armed\); next (tick|sandbox) at 20[0-9-]{8}T[0-9:]{8}Z' <<<"$status"
    warnings=$(journalctl -b -q --no-pager -p warning _PID=1 | grep -F "$unit" | grep -v 'Watchdog\|Failed with')
    check no-unit-warnings "systemd logged no warning about the unit: ${warnings:-(none)}" test -z "$warnings"
    if wait_for 20 more_rows sandbox userns ok 0; then
        pass userns "a mode creating a user and mount namespace (bubblewrap's way) ran ok"
    else
        fail userns "the user-namespace mode did not succeed: $(cat "$dir"/.loop-orchestrator/runs/*/userns.log 2>/dev/null | tail -3 | tr '\n' ' ')"
    fi

    # --- 2. a valid edit + systemctl reload ---------------------------------------------
    main=$(prop $unit MainPID)
    c=$(cursor)
    schedules '
    { "id": "tick", "task": "t", "cron": "*/2 * * * * *", "modes": ["note"] },
    { "id": "added", "task": "a", "cron": "*/2 * * * * *", "modes": ["note"] }'
    timeout 60 systemctl reload "$unit"
    rc=$?
    check reload-valid "systemctl reload exits $rc" test "$rc" = 0
    if wait_for 10 journal_has "$c" 'reloaded.*SIGHUP|SIGHUP.*reloaded' _PID="$main"; then
        pass reload-sighup "the service reloaded on the SIGHUP of ExecReload="
    else
        fail reload-sighup "no 'reloaded' line with trigger SIGHUP: $(unit_log_since "$c" $unit | tail -5 | tr '\n' ' ')"
    fi
    check reload-fires "the added schedule fires" wait_for 20 more_rows added cycle ok 0

    # --- 3. an invalid edit + systemctl reload ------------------------------------------
    c=$(cursor)
    schedules '
    { "id": "tick", "task": "t", "cron": "*/2 * * * * *", "modes": ["note"] },
    { "id": "added", "task": "a", "crn": "*/2 * * * * *", "modes": ["note"] }'
    err=$(timeout 60 systemctl reload "$unit" 2>&1)
    rc=$?
    check reload-invalid-fails "systemctl reload exits $rc: $(head -1 <<<"$err")" test "$rc" -ne 0
    # The message of `validate`, run by ExecReload= (a process other than the main one).
    invalid() { unit_log_since "$c" $unit | grep -v "\[$main\]" | grep -E 'schedules\.json:[0-9]+:[0-9]+: unknown field "crn"'; }
    wait_for 10 invalid >/dev/null
    msg=$(invalid)
    check reload-invalid-journal "the journal names file:line:column: ${msg:-(missing)}" test -n "$msg"
    state=$(prop $unit ActiveState)
    check reload-invalid-active "ActiveState=$state, MainPID $(prop $unit MainPID) (was $main)" \
        test "$state" = active -a "$(prop $unit MainPID)" = "$main"
    n=$(rows added cycle ok)
    check reload-invalid-last-good "the last good configuration keeps firing 'added'" \
        wait_for 20 more_rows added cycle ok "$((n + 1))"

    # --- 4. the watchdog: a stopped service is killed and restarted ---------------------
    mkdir -p /etc/systemd/system/$unit.d
    printf '[Service]\nWatchdogSec=3s\nRestartSec=1s\n' >/etc/systemd/system/$unit.d/test-watchdog.conf
    systemctl daemon-reload
    mode sleeper '["sleep", "300"]'
    schedules '
    { "id": "tick", "task": "t", "cron": "*/2 * * * * *", "modes": ["note"] },
    { "id": "long", "task": "l", "cron": "* * * * * *", "modes": ["sleeper"] }'
    timeout 60 systemctl restart "$unit"
    main=$(prop $unit MainPID)
    restarts=$(prop $unit NRestarts)
    wait_for 20 pgrep -u loop -x sleep >/dev/null
    sleeper=$(pgrep -u loop -x sleep | head -1)
    c=$(cursor)
    kill -STOP "$main"
    restarted() {
        [ "$(prop $unit NRestarts)" -gt "$restarts" ] && [ "$(prop $unit ActiveState)" = active ] &&
            [ "$(prop $unit MainPID)" != "$main" ]
    }
    wait_for 30 restarted
    check watchdog-restart "stopped pid $main replaced by $(prop $unit MainPID) within 30 s" restarted
    check watchdog-result "systemd: the watchdog fired, the unit failed with result 'watchdog'" \
        wait_for 10 journal_has "$c" "$unit: Failed with result 'watchdog'" _PID=1 UNIT=$unit
    check watchdog-old-gone "the stopped supervisor and its mode (pid ${sleeper:-none}) are gone" \
        bash -c "! kill -0 $main 2>/dev/null && [ -n '$sleeper' ] && ! kill -0 '$sleeper' 2>/dev/null"
    reaped() { journal_has "$c" 'leftover process group' -u $unit && more_rows long sleeper interrupted 0; }
    check watchdog-reaped "the next start reaped the group left behind and wrote its interrupted rows" \
        wait_for 10 reaped
    rm /etc/systemd/system/$unit.d/test-watchdog.conf
    systemctl daemon-reload

    # --- 5. systemctl stop while a mode runs --------------------------------------------
    wait_for 20 pgrep -u loop -x sleep >/dev/null
    before=$(rows long sleeper interrupted)
    timeout 60 systemctl stop "$unit"
    result=$(prop $unit Result)
    check stop-result "Result=$result, exit status $(prop $unit ExecMainStatus)" \
        test "$result" = success -a "$(prop $unit ExecMainStatus)" = 0
    check stop-interrupted "the running mode's row is interrupted" more_rows long sleeper interrupted "$before"
    left=$(pgrep -u loop -a)
    check stop-nothing-left "no process of the unit left: ${left:-(none)}" test -z "$left"
fi

if [ "$part" = deb ]; then
    out=$(dpkg -i /test/loop-orchestrator.deb 2>&1)
    rc=$?
    check deb-install "dpkg -i exits $rc: $(tail -1 <<<"$out")" test "$rc" = 0
    entry=$(getent passwd loop)
    check deb-user "the package created the user: $entry" \
        grep -q '^loop:x:[0-9]*:[0-9]*:loop-orchestrator:/var/lib/loop-orchestrator:/usr/sbin/nologin$' <<<"$entry"
    check deb-instance "/srv/loop is loop's ($(stat -c %U:%G:%a $dir)) and a working instance" \
        bash -c "[ \"\$(stat -c %U:%G:%a $dir)\" = loop:loop:750 ] && runuser -u loop -- loop-orchestrator --dir $dir validate >/dev/null"
    out=$(systemd-analyze verify /usr/lib/systemd/system/$unit /usr/lib/systemd/system/loop-orchestrator@.service 2>&1)
    check deb-verify "systemd-analyze verify prints nothing for both units: ${out:-(nothing)}" test -z "$out"
    timeout 60 systemctl enable --now "$unit"
    rc=$?
    check deb-enable-now "systemctl enable --now exits $rc; $(systemctl is-enabled $unit), $(prop $unit ActiveState), Type=$(prop $unit Type), '$(prop $unit StatusText)'" \
        test "$rc" = 0 -a "$(systemctl is-enabled $unit)" = enabled -a "$(prop $unit ActiveState)" = active -a "$(prop $unit Type)" = notify -a -n "$(prop $unit StatusText)"
    timeout 60 systemctl reload "$unit"
    rc=$?
    check deb-reload "systemctl reload of the installed unit exits $rc" test "$rc" = 0
    score=$(systemd-analyze security "$unit" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    info "systemd-analyze security $unit: ${score:-?}"
    check deb-security "exposure ${score:-?} <= 3.0" awk -v s="${score:-99}" 'BEGIN { exit !(s <= 3.0) }'

    # The template: two instances beside each other.
    for name in alpha beta; do
        install -d -o loop -g loop -m 0750 $dir/$name
        runuser -u loop -- loop-orchestrator init $dir/$name >/dev/null
    done
    timeout 60 systemctl start loop-orchestrator@alpha loop-orchestrator@beta
    a=$(prop loop-orchestrator@alpha MainPID)
    b=$(prop loop-orchestrator@beta MainPID)
    check template "two instances run: alpha pid $a in $(readlink /proc/$a/cwd), beta pid $b in $(readlink /proc/$b/cwd)" \
        test "$(prop loop-orchestrator@alpha ActiveState)$(prop loop-orchestrator@beta ActiveState)" = activeactive \
        -a "$(readlink /proc/$a/cwd)" = $dir/alpha -a "$(readlink /proc/$b/cwd)" = $dir/beta \
        -a -n "$(prop loop-orchestrator@alpha StatusText)"
    timeout 60 systemctl stop loop-orchestrator@alpha loop-orchestrator@beta "$unit"
fi

exit 0
