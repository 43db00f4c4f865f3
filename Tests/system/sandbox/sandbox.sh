#!/bin/bash
# A real systemd (Debian 12: v252) as PID 1 of private pid/mount/uts/ipc/net/cgroup
# namespaces, for system tests of chatrelayd's unit files on a root shell whose PID 1 is
# not systemd (CI machines, containers with enough privileges).
#
# Adapted from the shared tool /work/shared/tools/systemd-sandbox (harness.sh, inner.sh,
# ptylaunch.py, units/); the project carries its own copy so that its tests run wherever the
# repository is cloned. Differences from that copy:
#   - The unit directory is assembled at start in the state folder: the stub targets are
#     written by this script, and systemd-journald.socket/.service are real symlinks to the
#     distribution's units. (In the shared copy the journald socket units are plain files
#     holding a path, so they never load and journald does not run.)
#   - systemd-journald-dev-log.socket is left out on purpose: its Symlinks=/dev/log would
#     create /dev/log on the host (/dev is the host's devtmpfs, not private).
#   - The manager's console is a pty from util-linux `script` (Essential on Debian) instead
#     of a Python helper, so python3 is not needed.
#   - /tmp is private to the sandbox too (PrivateTmp= directories stay off the host's /tmp).
#   - `start` also waits for systemd-journald to be active.
#   - systemd's default start limit is kept (the shared copy sets DefaultStartLimitIntervalSec=0):
#     the project's unit relies on it to give up on a daemon that dies at every start.
#   - A host with only the unified cgroup hierarchy (cgroup v2 at /sys/fs/cgroup) gets a
#     cgroup2 mount instead of the hybrid layout (untested on such a host).
#
# Usage:
#   sandbox.sh start              boot it (about 0.5 s)
#   sandbox.sh ctl ARGS...        systemctl --no-pager ARGS inside it
#   sandbox.sh exec CMD...        run CMD inside its namespaces (journalctl, curl --unix-socket ...)
#   sandbox.sh root               host path of its root (/proc/PID/root)
#   sandbox.sh logs               the manager's console
#   sandbox.sh stop               stop units, kill the namespace, remove its cgroups (idempotent)
# Environment:
#   SYSD_STATE_DIR  folder for its state (required; the unit directory is built in it)
#   SYSD_UNIT_DIR   folder with the unit files under test (searched before the stubs)
#   SYSD_ID         instance name, also the name of its cgroups (default chatrelayd-systest)
#   SYSD_TARGET     default sysd-test.target; SYSD_LOG_LEVEL default info; SYSD_FAST_STOP=1
# Needs root, util-linux >= 2.38 (unshare, nsenter, setpriv, script), systemd.
set -u
ID=${SYSD_ID:-chatrelayd-systest}
TARGET=${SYSD_TARGET:-sysd-test.target}
ST=${SYSD_STATE_DIR:?SYSD_STATE_DIR must name a folder for the sandbox state}
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "sandbox: $*" >&2; exit 1; }

SYSTEMD_BIN=
for b in /usr/lib/systemd/systemd /lib/systemd/systemd; do [ -x "$b" ] && { SYSTEMD_BIN=$b; break; }; done
DISTRO_UNITS=
for d in /usr/lib/systemd/system /lib/systemd/system; do [ -f "$d/systemd-journald.service" ] && { DISTRO_UNITS=$d; break; }; done

unified_only() { [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; }
# the sandbox runs systemd on the unified hierarchy alone when the host has nothing else
# (SYSD_FORCE_UNIFIED=1 tries that on a hybrid host, with no controllers)
sandbox_unified() { unified_only || [ "${SYSD_FORCE_UNIFIED:-}" = 1 ]; }

cg_dirs() {  # host cgroup dirs of this instance, one per hierarchy we are in
  local ctrl path m
  while IFS=: read -r _ ctrl path; do
    case "$ctrl" in
      "") if unified_only; then m=; else m=/unified; fi ;;
      name=systemd) m=/systemd ;; name=*) continue ;; *) m=/$ctrl ;;
    esac
    [ -d "/sys/fs/cgroup$m" ] || continue
    [ "$path" = / ] && path=
    echo "/sys/fs/cgroup$m$path/$ID"
  done < "${1:-/proc/self/cgroup}"
}
nspid() { [ -s "$ST/init.pid" ] && cat "$ST/init.pid"; }
alive() { local p; p=$(nspid) && [ -d "/proc/$p" ] && grep -q '^systemd\|^bash\|^setpriv\|^env' "/proc/$p/comm" 2>/dev/null; }
in_ns() { local p; p=$(nspid) || die "not running"; nsenter -t "$p" -m -u -i -n -p -C --wd=/ "$@"; }

write_units() {  # stub targets + the distribution's journald units, then the units under test
  local u=$ST/units
  rm -rf "$u"; mkdir -p "$u"
  stub() { local name=$1; shift; { echo "[Unit]"; echo "Description=$name (sandbox stub)"; printf '%s\n' "$@"; } > "$u/$name"; }
  local t
  for t in local-fs.target network-online.target network-pre.target network.target \
           nss-lookup.target paths.target remote-fs.target slices.target sockets.target \
           sysinit.target time-sync.target timers.target; do
    stub "$t" DefaultDependencies=no
  done
  stub shutdown.target DefaultDependencies=no RefuseManualStart=yes
  stub umount.target DefaultDependencies=no RefuseManualStart=yes
  stub basic.target Requires=sysinit.target \
    "Wants=sockets.target timers.target paths.target slices.target" \
    "After=sysinit.target sockets.target paths.target slices.target timers.target"
  stub multi-user.target Requires=basic.target After=basic.target
  stub sysd-test.target Requires=basic.target \
    "Wants=systemd-journald.socket systemd-journald.service" After=basic.target AllowIsolate=yes
  # real symlinks (see the header): a unit file that is a symlink loads as the file it names
  ln -s "$DISTRO_UNITS/systemd-journald.socket" "$u/systemd-journald.socket"
  ln -s "$DISTRO_UNITS/systemd-journald.service" "$u/systemd-journald.service"
}

start() {
  alive && die "already running (pid $(nspid))"
  [ -n "$SYSTEMD_BIN" ] || die "systemd not found"
  [ -n "$DISTRO_UNITS" ] || die "systemd-journald.service not found"
  mkdir -p "$ST"; rm -f "$ST"/*.pid "$ST/go"
  : > "$ST/console.log"
  write_units
  cg_dirs > "$ST/cgroups"
  [ -s "$ST/cgroups" ] || die "no cgroup hierarchy found under /sys/fs/cgroup"
  local d c= s= up t0
  while read -r d; do
    mkdir -p "$d" || die "mkdir $d"
    case $d in */cpuset/*) cat "$(dirname "$d")/cpuset.cpus" > "$d/cpuset.cpus"; cat "$(dirname "$d")/cpuset.mems" > "$d/cpuset.mems";; esac
  done < "$ST/cgroups"
  t0=$(date +%s.%N)
  # The subshell moves itself into the per-instance cgroups, then becomes the launcher; unshare
  # --cgroup makes those cgroups the namespace root that the isolated systemd sees as "/".
  # `script` gives the manager a pty as console (copied to console.log); the command it runs
  # records its pid (= the unshare process) first.
  ( while read -r d; do echo $BASHPID > "$d/cgroup.procs" || exit 1; done < "$ST/cgroups"
    export SYSD_GO=$ST/go SYSD_UNITS=${SYSD_UNIT_DIR:+$SYSD_UNIT_DIR:}$ST/units SYSD_TARGET=$TARGET SYSD_SYSTEMD=$SYSTEMD_BIN
    export SYSD_INIT=$SELF_DIR/sandbox-init.sh SYSD_PIDFILE=$ST/unshare.pid SHELL=/bin/bash
    if sandbox_unified; then export SYSD_UNIFIED=1; fi
    exec setsid script -q -f -e -c 'export SYSD_CONSOLE=$(tty); echo $$ > "$SYSD_PIDFILE.tmp"; mv "$SYSD_PIDFILE.tmp" "$SYSD_PIDFILE";
      exec unshare --pid --fork --kill-child --mount --propagation private --mount-proc --uts --ipc --net --cgroup /bin/bash "$SYSD_INIT"' \
      "$ST/console.log" ) </dev/null >>"$ST/launcher.log" 2>&1 &
  echo $! > "$ST/launcher.pid"
  for _ in $(seq 200); do [ -s "$ST/unshare.pid" ] && break; sleep 0.05; done
  up=$(cat "$ST/unshare.pid" 2>/dev/null) || die "launcher failed, see $ST/launcher.log"
  for _ in $(seq 200); do
    c=$(awk '{print $1}' "/proc/$up/task/$up/children" 2>/dev/null); [ -n "$c" ] && break; sleep 0.05
  done
  [ -n "$c" ] || die "no namespace init; see $ST/console.log"
  echo "$c" > "$ST/init.pid"
  # move launcher + unshare back to our own cgroups so the namespace root holds only its own
  # processes (otherwise PID1 logs EIO while migrating/listing invisible PIDs)
  local q
  while read -r d; do
    for q in $(cat "$d/cgroup.procs"); do
      [ "$(readlink "/proc/$q/ns/pid")" = "$(readlink "/proc/$c/ns/pid")" ] || echo "$q" 2>/dev/null > "$(dirname "$d")/cgroup.procs"
    done
  done < "$ST/cgroups"
  touch "$ST/go"
  # wait until the manager answers and has finished its initial transaction, and journald runs
  for _ in $(seq 300); do
    s=$(in_ns systemctl is-system-running 2>/dev/null) && [ -n "$s" ] && case $s in running|degraded) break;; esac
    [ -d "/proc/$c" ] || die "isolated systemd died; see $ST/console.log"
    sleep 0.1
  done
  for _ in $(seq 100); do
    [ "$(in_ns systemctl is-active systemd-journald.service 2>/dev/null)" = active ] && break
    sleep 0.1
  done
  [ "$(in_ns systemctl is-active systemd-journald.service 2>/dev/null)" = active ] \
    || die "systemd-journald did not start; see $ST/console.log"
  echo "started $ID: init host pid $c, state ${s:-unknown}, $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"
}

stop() {
  local p u l d
  p=$(nspid); u=$(cat "$ST/unshare.pid" 2>/dev/null); l=$(cat "$ST/launcher.pid" 2>/dev/null)
  if [ -z "$p$u$l" ] && [ ! -f "$ST/cgroups" ]; then return 0; fi
  # best effort: stop every unit not wanted by the target (runs ExecStop=, drains, cleans up)
  [ -n "$p" ] && [ -d "/proc/$p" ] && [ "${SYSD_FAST_STOP:-}" != 1 ] && timeout 25 nsenter -t "$p" -m -p systemctl isolate "$TARGET" >/dev/null 2>&1
  # killing PID 1 of a pid namespace SIGKILLs every process in it
  [ -n "$p" ] && [ -d "/proc/$p" ] && kill -KILL "$p"
  for _ in $(seq 100); do { [ -n "$u" ] && [ -d "/proc/$u" ]; } || break; sleep 0.05; done
  [ -n "$u" ] && [ -d "/proc/$u" ] && kill -KILL "$u"
  [ -n "$l" ] && [ -d "/proc/$l" ] && kill -TERM "$l" 2>/dev/null
  sleep 0.2
  # remove the per-instance cgroup trees bottom-up (they are empty once the namespace is gone)
  if [ -f "$ST/cgroups" ]; then
    while read -r d; do
      [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$d" ] && echo "sandbox: could not remove $d" >&2
    done < "$ST/cgroups"
    rm -f "$ST/cgroups"
  fi
  rm -f "$ST"/*.pid
  echo "stopped $ID"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  ctl) shift; in_ns systemctl --no-pager "$@" ;;
  exec) shift; in_ns "$@" ;;
  root) echo "/proc/$(nspid)/root" ;;
  logs) tr -d '\r' < "$ST/console.log" ;;
  pid) nspid ;;
  *) sed -n '2,40p' "$0"; exit 2 ;;
esac
