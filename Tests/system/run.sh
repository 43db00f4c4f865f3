#!/bin/bash
# System test of chatrelayd under a real systemd (Debian 12: systemd 252).
#
#   Tests/system/run.sh PATH/TO/chatrelayd        (as root; e.g. .build/debug/chatrelayd)
#
# In a private mount namespace (overlays over /usr, /etc and /var, so the host keeps no
# file and no user afterwards) it installs the daemon as a package would: the binary as
# /usr/bin/chatrelayd, a test configuration as /etc/chatrelayd/chatrelayd.yaml, the
# project's cassettes under /usr/share/chatrelayd/cassettes, systemd/chatrelayd.sysusers and
# .tmpfiles under /usr/lib/{sysusers,tmpfiles}.d (and runs systemd-sysusers and
# systemd-tmpfiles for them). It then boots a real systemd as PID 1 of private namespaces
# (Tests/system/sandbox/sandbox.sh) with the project's unit files from systemd/, unchanged,
# plus one test drop-in (CHATRELAYD_TEST_HOOKS=1, WatchdogSec=4s), and checks socket
# activation, STATUS=, reload during a stream, a watchdog restart, stop with a drain, and
# the journal fields, and kill -9 of the socket-activated daemon. Prints PASS:/FAIL: lines
# and, last, "N passed, M failed"; exits 1 if anything failed. Prints "SKIP: reason" and
# exits 0 when it cannot run here (not root, no unshare, no systemd). Takes about a minute.
# CHATRELAYD_SYSTEST_JOURNAL=FILE: write the sandbox's whole journal to FILE before teardown.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# (called through bash: works from a checkout that lost the executable bits)
SBS=$here/sandbox/sandbox.sh
sb() { bash "$SBS" "$@"; }

# ----------------------------------------------------------------------------- outer part
if [ -z "${CHATRELAYD_SYSTEST_INNER:-}" ]; then
  [ $# -eq 1 ] || { echo "usage: $0 PATH/TO/chatrelayd" >&2; exit 2; }
  skip() { echo "SKIP: $*"; exit 0; }
  [ "$(id -u)" -eq 0 ] || skip "needs root (private namespaces, overlay mounts, cgroups)"
  for t in unshare nsenter; do command -v "$t" >/dev/null || skip "$t not found (util-linux)"; done
  { [ -x /usr/lib/systemd/systemd ] || [ -x /lib/systemd/systemd ]; } && command -v systemctl >/dev/null \
    || skip "systemd not installed"
  missing=()
  for t in setpriv script journalctl systemd-sysusers systemd-tmpfiles curl; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] || { echo "FAIL: missing tools: ${missing[*]} (scripts/setup installs curl)"; echo "0 passed, 1 failed"; exit 1; }
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems || { echo "FAIL: the kernel has no overlay file system"; echo "0 passed, 1 failed"; exit 1; }
  [ -x "$1" ] && [ -f "$1" ] || { echo "$0: $1: not an executable file" >&2; exit 2; }
  binary=$(realpath "$1")
  host_state() {  # what the test must not leave behind (compared after the teardown)
    ls -d /usr/bin/chatrelayd /etc/chatrelayd /var/lib/chatrelayd /usr/share/chatrelayd \
          /usr/lib/sysusers.d/chatrelayd.conf /usr/lib/tmpfiles.d/chatrelayd.conf 2>/dev/null || true
    grep '^chatrelay:' /etc/passwd /etc/group || true
  }
  export -f host_state
  CHATRELAYD_SYSTEST_HOST_BEFORE=$(host_state); export CHATRELAYD_SYSTEST_HOST_BEFORE

  # not under $TMPDIR: it must stay outside the overlaid /usr, /etc and /var
  work=$(mktemp -d /tmp/chatrelayd-systest.XXXXXX)
  export SYSD_STATE_DIR=$work/sandbox SYSD_ID=chatrelayd-systest-$$
  # second line of defence: the inner part stops the sandbox itself
  trap 'SYSD_FAST_STOP=1 sb stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM
  rc=0
  CHATRELAYD_SYSTEST_INNER=1 CHATRELAYD_SYSTEST_WORK=$work \
    unshare --mount --propagation private bash "${BASH_SOURCE[0]}" "$binary" || rc=$?
  exit $rc
fi

# ------------------------------------------------- inner part: in a private mount namespace
binary=$1
work=$CHATRELAYD_SYSTEST_WORK
SOCK=/run/chatrelayd/gateway.sock
MSGID=5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d07
passed=0; failed=0; torn_down=no
t_start=$(date +%s.%N)

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
info() { echo "      $*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

teardown() {
  [ "$torn_down" = yes ] && return 0
  torn_down=yes
  if [ -n "$(sb pid 2>/dev/null)" ]; then
    if [ $failed -gt 0 ]; then
      echo "---- journal of the sandbox (last 80 lines) ----"
      sb exec journalctl --no-pager -n 80 2>&1 || true
      echo "---- manager console (last 20 lines) ----"
      sb logs 2>&1 | tail -20 || true
      echo "----"
    fi
    if [ -n "${CHATRELAYD_SYSTEST_JOURNAL:-}" ]; then
      sb exec journalctl --no-pager -o short-precise > "$CHATRELAYD_SYSTEST_JOURNAL" 2>&1 || true
    fi
  fi
  sb stop >/dev/null 2>&1 || echo "teardown: sandbox stop failed" >&2
  # the overlays vanish with this mount namespace; unmount anyway, innermost first
  for d in /var /etc /usr "$work/ovl"; do umount -l "$d" 2>/dev/null || true; done
}
finish() {
  local rc=$?
  trap - EXIT
  if [ "$torn_down" = no ] && [ $rc -ne 0 ]; then
    fail "the test script stopped early (exit $rc)"
  fi
  teardown
  echo "total time $(elapsed "$t_start") s"
  echo "$passed passed, $failed failed"
  [ $failed -eq 0 ]
}
trap finish EXIT
trap 'exit 130' INT TERM

ctl() { timeout 60 bash "$SBS" ctl "$@"; }
prop() { ctl show -p "$2" --value "$1" 2>/dev/null || echo "?"; }
inns() { sb exec "$@"; }
journal() { inns journalctl --no-pager -q "$@"; }

echo "chatrelayd system test: $("$binary" --version 2>&1 | sed -n 1p), $(systemctl --version | sed -n 1p)"
info "binary $binary"
if ldd "$binary" 2>/dev/null | grep -E '=> (/root|/home)/' >/dev/null; then
  info "WARNING: the binary loads libraries from /root or /home, which ProtectHome=yes hides from the service"
fi

# ---- installation into overlays ---------------------------------------------------------
mkdir -p "$work/ovl"
mount -t tmpfs -o mode=0700 chatrelayd-systest "$work/ovl"
for d in usr etc var; do
  mkdir -p "$work/ovl/$d.upper" "$work/ovl/$d.work"
  mount -t overlay "systest-$d" -o "lowerdir=/$d,upperdir=$work/ovl/$d.upper,workdir=$work/ovl/$d.work" "/$d"
done

install -m 0755 "$binary" /usr/bin/chatrelayd
install -d -m 0755 /usr/share/chatrelayd/cassettes /usr/lib/sysusers.d /usr/lib/tmpfiles.d /etc/chatrelayd
install -m 0644 "$repo"/Tests/Fixtures/cassettes/* /usr/share/chatrelayd/cassettes/
install -m 0644 "$repo/systemd/chatrelayd.sysusers" /usr/lib/sysusers.d/chatrelayd.conf
install -m 0644 "$repo/systemd/chatrelayd.tmpfiles" /usr/lib/tmpfiles.d/chatrelayd.conf
cat > /etc/chatrelayd/chatrelayd.yaml <<'YAML'
# chatrelayd system test (Tests/system/run.sh): recorded streams, no API key
server: {socket: /run/chatrelayd/gateway.sock, drain_timeout: 10s, usage_ledger: /var/lib/chatrelayd/usage.jsonl}
upstreams:
  - {name: recorded, kind: cassette, cassettes: [/usr/share/chatrelayd/cassettes], pace: none}
  - {name: slow, kind: cassette, cassettes: [/usr/share/chatrelayd/cassettes], pace: 6s}
models:
  - {name: grok-4-fast, upstream: recorded}
  - {name: grok-slow, upstream: slow, upstream_model: grok-4-fast}
# section 6: services app-*.service may use grok-4-fast only; everyone else everything
policy:
  - {name: apps, unit: "app-*.service", models: [grok-4-fast]}
  - {name: default}
YAML
chmod 0644 /etc/chatrelayd/chatrelayd.yaml
# The unit names the Swift crash backtracer at /usr/libexec/swift/linux/ (packagers install
# it there); install the one of the toolchain the binary was linked against, when there is one.
swiftcore=$(ldd /usr/bin/chatrelayd 2>/dev/null | awk '$1 == "libswiftCore.so" { print $3 }')
backtracer=
for c in ${swiftcore:+"$(dirname "$swiftcore")/../../../libexec/swift/linux/swift-backtrace-static"} \
         /opt/swift/usr/libexec/swift/linux/swift-backtrace-static; do
  [ -x "$c" ] && { backtracer=$(realpath "$c"); break; }
done
if [ -n "$backtracer" ]; then
  install -D -m 0755 "$backtracer" /usr/libexec/swift/linux/swift-backtrace-static
fi

# sysusers as a package's postinst would run it (writes /etc/passwd in the overlay only)
systemd-sysusers chatrelayd.conf 2>&1 | sed 's/^/      sysusers: /'
getent passwd chatrelay >/dev/null || { fail "systemd-sysusers did not create user chatrelay"; exit 1; }

# units: the project's files unchanged, one test drop-in
units=$work/units
mkdir -p "$units/chatrelayd.service.d"
cp "$repo/systemd/chatrelayd.service" "$repo/systemd/chatrelayd.socket" "$units/"
cat > "$units/chatrelayd.service.d/50-systemtest.conf" <<'UNIT'
# Tests/system/run.sh: the daemon's test hooks (SIGUSR2 wedges its event loops) and a
# short watchdog so that the watchdog restart is quick to observe.
[Service]
Environment=CHATRELAYD_TEST_HOOKS=1
WatchdogSec=4s
UNIT
export SYSD_UNIT_DIR=$units

info "backtracer ${backtracer:-not found (crash backtraces will be missing)}"
sb start
# boot-time tmpfiles (systemd-tmpfiles-setup.service is not part of the sandbox)
inns systemd-tmpfiles --create chatrelayd.conf
info "/run/chatrelayd: $(inns stat -c '%A %U:%G' /run/chatrelayd)"

# ---- helpers -----------------------------------------------------------------------------
BODY='{"model":"%s","stream":true,"max_tokens":4000,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant"},{"role":"user","content":"Say hi in Portuguese"}]}'
# chat MODEL FILE: a streaming request from inside the sandbox; response head and body in
# FILE, curl's own messages in FILE.err. Returns curl's status.
chat() {
  local body
  # shellcheck disable=SC2059
  body=$(printf "$BODY" "$1")
  timeout 45 bash "$SBS" exec curl -sS -N -i --max-time 40 --unix-socket "$SOCK" \
    -H 'Content-Type: application/json' --data-binary "$body" \
    http://localhost/v1/chat/completions > "$2" 2> "$2.err"
}
# summary FILE: sets HTTP (status), RID (x-request-id), EV (data: events), LAST (last data
# line), ERRS (error events)
summary() {
  local f=$1
  HTTP=$(tr -d '\r' < "$f" | awk 'NR == 1 { print $2 }')
  RID=$(tr -d '\r' < "$f" | awk 'tolower($1) == "x-request-id:" && !seen { print $2; seen = 1 }')
  EV=$(tr -d '\r' < "$f" | grep -c '^data:' || true)
  LAST=$(tr -d '\r' < "$f" | grep '^data:' | tail -1 | cut -c1-200 || true)
  ERRS=$(tr -d '\r' < "$f" | grep -c '^data: *{"error"' || true)
}
full_stream() { [ "$HTTP" = 200 ] && [ "$EV" = 128 ] && [ "$LAST" = "data: [DONE]" ] && [ "$ERRS" = 0 ]; }
describe() { echo "HTTP ${HTTP:-none}, $EV data events, last '${LAST:0:80}', request id ${RID:-none}"; }
healthz() { inns curl -sS --max-time 3 --unix-socket "$SOCK" http://localhost/healthz 2>&1 || true; }
# wait_stream: until /healthz reports a stream in flight (at most 5 s)
wait_stream() {
  local i h
  for i in $(seq 50); do
    h=$(healthz)
    [[ $h =~ \"active_streams\":\ *([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge 1 ] && return 0
    sleep 0.1
  done
  echo "      no stream in flight after 5 s; last /healthz: $h"
  return 1
}
# journal_has PATTERN ARGS...: grep journalctl ARGS output, retrying for 3 s (journald is async)
journal_has() {
  local pat=$1 i; shift
  for i in $(seq 30); do
    # (no grep -q: with pipefail, journalctl's SIGPIPE would turn a match into a failure)
    journal "$@" 2>/dev/null | grep -- "$pat" >/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# ---- 1. socket activation ----------------------------------------------------------------
echo "== 1. socket activation"
if ctl start chatrelayd.socket; then pass "systemctl start chatrelayd.socket"; else fail "systemctl start chatrelayd.socket"; fi
info "socket: $(inns stat -c '%A %U:%G %n' "$SOCK" 2>&1)"
s=$(prop chatrelayd.service ActiveState)
[ "$s" = inactive ] && pass "chatrelayd.service inactive before the first connection" \
                    || fail "chatrelayd.service is '$s' before the first connection (expected inactive)"
t=$(date +%s.%N)
chat grok-4-fast "$work/r1" || true
summary "$work/r1"
if full_stream; then pass "the first request activated the service and got the whole stream ($(describe), $(elapsed "$t") s)"
else fail "first request: $(describe); curl: $(head -c 300 "$work/r1.err")"; fi
show=$(ctl show -p ActiveState,SubState,StatusText,MainPID chatrelayd.service 2>&1 || true)
echo "$show" | sed 's/^/      /'
st=$(prop chatrelayd.service StatusText)
if [ "$(prop chatrelayd.service ActiveState)/$(prop chatrelayd.service SubState)" = active/running ] && [[ $st == serving:* ]]; then
  pass "chatrelayd.service active/running, StatusText '$st'"
else
  fail "chatrelayd.service state: $(echo "$show" | tr '\n' ' ')"
fi
echo "---- systemctl status chatrelayd --no-pager"
ctl status chatrelayd --no-pager 2>&1 || true
echo "----"

# ---- 2. reload while a stream runs -------------------------------------------------------
echo "== 2. reload during a stream"
pid1=$(prop chatrelayd.service MainPID)
chat grok-slow "$work/r2" & bg=$!
t=$(date +%s.%N)
wait_stream || true
rrc=0; rout=$(ctl reload chatrelayd 2>&1) || rrc=$?
if [ $rrc -eq 0 ]; then pass "systemctl reload chatrelayd exited 0 with a stream in flight ($(elapsed "$t") s after the request)"
else fail "systemctl reload chatrelayd exited $rrc: $rout"; fi
wait $bg || true
summary "$work/r2"
if full_stream; then pass "the stream across the reload is intact ($(describe), $(elapsed "$t") s)"
else fail "stream across the reload: $(describe); curl: $(head -c 300 "$work/r2.err")"; fi
if journal_has 'configuration reloaded' -u chatrelayd -o cat; then
  pass "journal: $(journal -u chatrelayd -o cat | grep 'configuration reloaded' | tail -1)"
else fail "journal has no 'configuration reloaded'"; fi
pid2=$(prop chatrelayd.service MainPID)
[ "$pid1" = "$pid2" ] && [ "$pid2" != 0 ] && [ "$(prop chatrelayd.service ActiveState)" = active ] && pass "same MainPID $pid2 after the reload, StatusText '$(prop chatrelayd.service StatusText)'" \
                      || fail "MainPID across the reload: $pid1 -> $pid2, $(prop chatrelayd.service ActiveState)"

# ---- 3. watchdog -------------------------------------------------------------------------
echo "== 3. watchdog"
n0=$(prop chatrelayd.service NRestarts); old=$(prop chatrelayd.service MainPID)
info "WatchdogUSec=$(prop chatrelayd.service WatchdogUSec) TimeoutAbortUSec=$(prop chatrelayd.service TimeoutAbortUSec) RestartUSec=$(prop chatrelayd.service RestartUSec) NRestarts=$n0 MainPID=$old"
# healthy first: a few watchdog periods without a restart
sleep 5
n=$(prop chatrelayd.service NRestarts)
a=$(prop chatrelayd.service ActiveState)/$(prop chatrelayd.service SubState)
[ "$n" = "$n0" ] && [ "$a" = active/running ] && pass "no watchdog restart while healthy (5 s, NRestarts=$n)" \
  || fail "while healthy: NRestarts $n0 -> $n, $a"
t=$(date +%s.%N)
ctl kill -s USR2 chatrelayd || true
ok=no
for _ in $(seq 120); do   # 30 s (WatchdogSec 4 + TimeoutAbortSec 10 + RestartSec 1 = 15 s expected at most)
  n=$(prop chatrelayd.service NRestarts); p=$(prop chatrelayd.service MainPID)
  a=$(prop chatrelayd.service ActiveState)/$(prop chatrelayd.service SubState)
  if [ "$n" = $((n0 + 1)) ] && [ "$p" != "$old" ] && [ "$p" != 0 ] && [ "$a" = active/running ]; then ok=yes; break; fi
  sleep 0.25
done
if [ $ok = yes ]; then pass "wedged daemon restarted by the watchdog after $(elapsed "$t") s: NRestarts $n0 -> $n, MainPID $old -> $p, $a"
else fail "no watchdog restart within 30 s: NRestarts=$n MainPID=$p state=$a"; fi
journal -u chatrelayd -o cat | grep -E 'test hook|health probe|Watchdog timeout|Program crashed|Backtrace took|timed out|Main process exited|Failed with result|Scheduled restart' \
  | sed 's/^/      journal: /' || true
if journal_has 'Watchdog timeout' -u chatrelayd -o cat; then pass "journal: systemd logged the watchdog timeout"
else fail "journal has no 'Watchdog timeout'"; fi
chat grok-4-fast "$work/r3" || true
summary "$work/r3"
if full_stream; then pass "the restarted daemon serves ($(describe))"
else fail "request after the restart: $(describe); curl: $(head -c 300 "$work/r3.err")"; fi

# ---- 4. stop while a stream runs ---------------------------------------------------------
echo "== 4. stop during a stream"
chat grok-slow "$work/r4" & bg=$!
t=$(date +%s.%N)
wait_stream || true
src=0; sout=$(ctl stop chatrelayd 2>&1) || src=$?
[ $src -eq 0 ] && pass "systemctl stop chatrelayd exited 0 after $(elapsed "$t") s" || fail "systemctl stop chatrelayd exited $src: $sout"
wait $bg || true
summary "$work/r4"
if full_stream; then pass "the client got the whole stream during the stop ($(describe))"
elif [ "$HTTP" = 200 ] && [ "$ERRS" -ge 1 ] && [[ $LAST == *'"error"'* ]]; then pass "the client got an error event at the end ($(describe))"
else fail "stream during the stop was cut silently: $(describe); curl: $(head -c 300 "$work/r4.err")"; fi
a=$(prop chatrelayd.service ActiveState); r=$(prop chatrelayd.service Result)
[ "$a" = inactive ] && [ "$r" = success ] && pass "chatrelayd.service $a, Result=$r" || fail "after stop: ActiveState=$a Result=$r"
if journal_has 'stopping:' -u chatrelayd -o cat; then pass "journal: $(journal -u chatrelayd -o cat | grep 'stopping:' | tail -1)"
else fail "journal has no 'stopping:'"; fi
if [ -n "$RID" ] && journal_has "\"REQUEST_ID\":\"$RID\"" -u chatrelayd -o json; then
  m=$(journal -u chatrelayd -o json | grep -F "\"REQUEST_ID\":\"$RID\"" | grep -o '"MESSAGE":"[^"]*' | tail -1 || true)
  if [[ $m == *'request completed'* ]]; then pass "journal: '${m#\"MESSAGE\":\"}' for request $RID"
  else fail "journal entry for request $RID is not 'request completed': $m"; fi
else fail "journal has no entry with REQUEST_ID=${RID:-none}"; fi

# ---- 5. structured journal fields --------------------------------------------------------
echo "== 5. journal fields"
j=$(journal -u chatrelayd -o json "MESSAGE_ID=$MSGID" 2>&1 || true)
total=$(printf '%s\n' "$j" | grep -c '^{' || true)
with_id=$(printf '%s\n' "$j" | grep -c "\"MESSAGE_ID\":\"$MSGID\"" || true)
good=$(printf '%s\n' "$j" | grep '"MODEL":"grok-4-fast"' | grep -c '"REQUEST_ID":"[^"]' || true)
info "journalctl -u chatrelayd -o json MESSAGE_ID=$MSGID: $total entries, $with_id with that MESSAGE_ID, $good with MODEL=grok-4-fast and a REQUEST_ID"
printf '%s\n' "$j" | grep '"MODEL":"grok-4-fast"' | tail -1 | sed -e 's/^{//' -e 's/}$//' -e 's/","/"\n"/g' \
  | grep -E '^"([A-Z]|_SYSTEMD_UNIT"|_PID"|_UID")' | grep -v '^"SYSLOG_TIMESTAMP"' \
  | sed 's/^/      /' || true
if [ "$total" -ge 1 ] && [ "$total" = "$with_id" ] && [ "$good" -ge 1 ]; then
  pass "request completed entries carry MESSAGE_ID, MODEL=grok-4-fast and REQUEST_ID ($good of $total)"
else
  fail "structured entries: $total returned, $with_id with MESSAGE_ID, $good with MODEL=grok-4-fast and REQUEST_ID"
fi

# ---- 6. callers: a service's unit, the policy, chatrelayd usage --------------------------
# (issue 7) curl runs as user apptester in the service app-systest@MODEL.service (a template
# unit added to the sandbox's unit folder; systemd-run would need D-Bus, which the sandbox has
# not). The daemon reads the caller's unit from /proc/PID/cgroup (ProtectProc=default in the
# unit), applies the policy rule 'apps' (app-*.service: grok-4-fast only), and writes the unit
# into the ledger and the journal.
echo "== 6. caller identity and policy for a service"
useradd --system --no-create-home --shell /usr/sbin/nologin apptester  # in the /etc overlay only
for m in grok-4-fast grok-slow; do
  # shellcheck disable=SC2059
  printf "$BODY" "$m" > "/etc/chatrelayd/systest-$m.json"
done
chmod 0644 /etc/chatrelayd/systest-*.json
cat > "$units/app-systest@.service" <<'UNIT'
# Tests/system/run.sh section 6: one chat request as user apptester from a service
[Service]
Type=oneshot
User=apptester
SupplementaryGroups=chatrelay
StandardOutput=file:/run/app-systest-%i.out
StandardError=file:/run/app-systest-%i.err
ExecStart=/usr/bin/curl -sS -N -i --max-time 40 --unix-socket /run/chatrelayd/gateway.sock -H "Content-Type: application/json" --data-binary @/etc/chatrelayd/systest-%i.json http://localhost/v1/chat/completions
UNIT
ctl daemon-reload || true
# app MODEL: one request from app-systest@MODEL.service; head and body in $work/app-MODEL.out
app() {
  ctl start "app-systest@$1.service" || true
  inns cat "/run/app-systest-$1.out" > "$work/app-$1.out" 2>/dev/null || true
}
app grok-4-fast
summary "$work/app-grok-4-fast.out"
if full_stream; then pass "a request from app-systest@grok-4-fast.service (user apptester) got the whole stream ($(describe))"
else fail "request from app-systest@grok-4-fast.service: $(describe); $(inns cat /run/app-systest-grok-4-fast.err 2>&1 | head -c 300)"; fi
ledger=$(inns cat /var/lib/chatrelayd/usage.jsonl 2>&1 || true)
line=$(printf '%s\n' "$ledger" | grep -F "\"request_id\":\"$RID\"" || true)
if [[ $line == *'"unit":"app-systest@grok-4-fast.service"'* && $line == *'"user":"apptester"'* \
   && $line == *'"key":"app-systest@grok-4-fast.service (apptester)"'* ]]; then
  pass "usage record: $(printf '%s' "$line" | grep -o '"caller":{[^}]*}')"
else fail "no usage record with the service's unit and user apptester for request ${RID:-none}: ${line:-$(printf '%s\n' "$ledger" | tail -2)}"; fi
if [ -n "$RID" ] && journal_has "\"REQUEST_ID\":\"$RID\"" -u chatrelayd -o json "MESSAGE_ID=$MSGID"; then
  e=$(journal -u chatrelayd -o json "MESSAGE_ID=$MSGID" | grep -F "\"REQUEST_ID\":\"$RID\"" | tail -1)
  fields=$(printf '%s' "$e" | grep -oE '"(CALLER[A-Z_]*|POLICY_RULE)":"[^"]*"' | tr '\n' ' ')
  if [[ $e == *'"CALLER_UNIT":"app-systest@grok-4-fast.service"'* && $e == *'"CALLER_USER":"apptester"'* && $e == *'"POLICY_RULE":"apps"'* ]]; then
    pass "journal: $fields"
  else fail "journal entry of request $RID lacks CALLER_UNIT/CALLER_USER/POLICY_RULE: $fields"; fi
else fail "journal has no request completed entry for request ${RID:-none}"; fi
app grok-slow
summary "$work/app-grok-slow.out"
if [ "$HTTP" = 403 ] && grep -q '"code":"permission_denied"' "$work/app-grok-slow.out"; then
  pass "grok-slow from app-systest@grok-slow.service is refused: HTTP 403 $(tr -d '\r' < "$work/app-grok-slow.out" | tail -1 | cut -c1-200)"
else fail "grok-slow from app-systest@grok-slow.service: $(describe)"; fi
if journal_has "by rule 'apps'" -u chatrelayd -o cat; then pass "journal: $(journal -u chatrelayd -o cat | grep "by rule 'apps'" | tail -1)"
else fail "journal has no denial by rule 'apps'"; fi
uout=$(inns chatrelayd usage --config /etc/chatrelayd/chatrelayd.yaml 2>&1) && urc=0 || urc=$?
printf '%s\n' "$uout" | sed 's/^/      /'
if [ $urc -eq 0 ] && printf '%s\n' "$uout" | grep -E '^app-systest@grok-4-fast\.service \(apptester\) +1 +0 ' >/dev/null \
   && printf '%s\n' "$uout" | grep -E '^app-systest@grok-slow\.service \(apptester\) +1 +1 ' >/dev/null; then
  pass "chatrelayd usage lists both services by unit"
else fail "chatrelayd usage (exit $urc) does not list app-systest@grok-4-fast.service and app-systest@grok-slow.service as expected"; fi

# ---- 7. kill -9 while socket-activated ---------------------------------------------------
# systemd keeps the listening socket while the daemon is dead: clients that connect in the
# gap queue in its backlog (Backlog=1024) and are served by the daemon Restart=on-failure
# brings back (SIGKILL is an unclean exit) after RestartSec=1s.
echo "== 7. kill -9 while socket-activated"
chat grok-4-fast "$work/k0" || true   # the service is up (activated again by section 6)
n0=$(prop chatrelayd.service NRestarts); old=$(prop chatrelayd.service MainPID)
info "Restart=$(prop chatrelayd.service Restart) RestartUSec=$(prop chatrelayd.service RestartUSec) NRestarts=$n0 MainPID=$old"
t=$(date +%s.%N)
inns kill -9 "$old" || true
# Wait for systemd to notice the death, so that every client below connects while no daemon runs.
gap=no
for _ in $(seq 100); do
  a=$(prop chatrelayd.service ActiveState)/$(prop chatrelayd.service SubState)
  [ "$a" = activating/auto-restart ] && { gap=yes; break; }
  sleep 0.02
done
[ $gap = yes ] && pass "after kill -9 of MainPID $old the service is $a ($(elapsed "$t") s)" || fail "after kill -9: the service is $a, not activating/auto-restart"
t=$(date +%s.%N)
pids=()
for i in 1 2 3 4 5 6 7 8; do chat grok-4-fast "$work/k$i" & pids+=($!); done
# While no daemon runs, the clients wait in the listening socket's backlog: its Recv-Q
# (ss -xl) counts them. Looked at until the new daemon is up.
queued=0
while [ "$(prop chatrelayd.service SubState)" = auto-restart ]; do
  q=$(inns ss -xlH src "$SOCK" 2>/dev/null | awk '{ print $3; exit }')
  [ "${q:-0}" -gt "$queued" ] && queued=$q
done
info "clients seen queued in the socket's backlog while no daemon ran: $queued of 8"
for p in "${pids[@]}"; do wait "$p" || true; done
served=0; refused=0
for i in 1 2 3 4 5 6 7 8; do
  summary "$work/k$i"
  if full_stream; then served=$((served + 1)); else info "client $i: $(describe); curl: $(head -c 200 "$work/k$i.err")"; fi
  grep -qi 'refused' "$work/k$i.err" && refused=$((refused + 1))
done
[ $served = 8 ] && [ $refused = 0 ] && [ "$queued" -ge 1 ] && pass "the 8 clients that connected during the restart ($queued seen queued in the backlog) got whole streams from the new daemon ($(elapsed "$t") s), none refused" \
  || fail "clients during the restart: $served of 8 served, $refused refused, $queued seen queued in the backlog"
n=$(prop chatrelayd.service NRestarts); p=$(prop chatrelayd.service MainPID)
a=$(prop chatrelayd.service ActiveState)/$(prop chatrelayd.service SubState)
[ "$n" = $((n0 + 1)) ] && [ "$p" != "$old" ] && [ "$p" != 0 ] && [ "$a" = active/running ] \
  && pass "systemd restarted the daemon: NRestarts $n0 -> $n, MainPID $old -> $p, $a" \
  || fail "after kill -9: NRestarts $n0 -> $n, MainPID $old -> $p, $a"
journal -u chatrelayd -o cat | grep -E 'Main process exited|Scheduled restart|adopted the socket' | tail -3 | sed 's/^/      journal: /' || true

teardown
# the host keeps nothing: the overlays are gone now, so this namespace shows the host's files
if findmnt -n -t overlay /usr >/dev/null || findmnt -n -t overlay /etc >/dev/null; then
  fail "the overlays over /usr and /etc are still mounted"
else
  after=$(host_state)
  [ "$after" = "$CHATRELAYD_SYSTEST_HOST_BEFORE" ] \
    && pass "host untouched: no chatrelay user, no /usr/bin/chatrelayd, /etc/chatrelayd, /var/lib/chatrelayd${after:+ (beyond what was there before)}" \
    || fail "left on the host: $(echo $after)"
fi
exit 0
