#!/bin/bash
# PID 1 of the fresh pid/mount/uts/ipc/net/cgroup namespaces made by sandbox.sh: sets up a
# private view of the system, then execs the real systemd. Nothing here propagates to the
# host (unshare made every mount private). Adapted from the shared systemd-sandbox inner.sh
# (see sandbox.sh); differences: private /tmp, unified-only cgroup hosts.
# Environment (from sandbox.sh): SYSD_UNITS SYSD_TARGET SYSD_SYSTEMD SYSD_GO SYSD_CONSOLE SYSD_UNIFIED
set -eu
mount --make-rprivate /
# private /run (notify socket, /run/systemd/private, the sockets under test, ...)
mount -t tmpfs -o mode=0755,nosuid,nodev,size=64m sysd-run /run
mkdir -p /run/lock /run/systemd/system.conf.d /run/systemd/journald.conf.d
cat > /run/systemd/system.conf.d/10-sandbox.conf <<CONF
[Manager]
LogTarget=journal
DefaultLimitCORE=0
ShowStatus=no
DefaultTimeoutStartSec=30s
DefaultTimeoutStopSec=10s
DefaultCPUAccounting=no
DefaultIOAccounting=no
DefaultBlockIOAccounting=no
DefaultMemoryAccounting=no
DefaultTasksAccounting=no
DefaultIPAccounting=no
CONF
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\nReadKMsg=no\n' > /run/systemd/journald.conf.d/10-sandbox.conf
# keep the host's /etc/systemd/system and /var state out of reach (systemctl enable, StateDirectory=...)
mount -t tmpfs -o mode=0755 sysd-etc /etc/systemd/system
for d in /var/lib/systemd /var/log /var/tmp; do [ -d "$d" ] && mount -t tmpfs -o mode=0755 sysd-var "$d"; done
chmod 1777 /var/tmp
# kernel tunables read-only: PID1 would otherwise set fs.file-max, fs.nr_open, kernel.core_pattern on the host
mount --bind /proc/sys /proc/sys;  mount -o remount,bind,ro /proc/sys
[ -e /proc/sysrq-trigger ] && { mount --bind /proc/sysrq-trigger /proc/sysrq-trigger; mount -o remount,bind,ro /proc/sysrq-trigger; }
mount -o remount,bind,ro /sys
if [ -n "${SYSD_UNIFIED:-}" ]; then
  # unified-only host: a fresh cgroup2 mount rooted at our cgroup-namespace root
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
else
  # hybrid/legacy host: fresh cgroup mounts rooted at our cgroup-namespace root (= the
  # per-instance sub-cgroup on the host)
  mount -t tmpfs -o mode=0755,nosuid,nodev,noexec sysd-cgroup /sys/fs/cgroup
  while IFS=: read -r _ ctrl _; do
    case "$ctrl" in
      "") mkdir -p /sys/fs/cgroup/unified; mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup/unified ;;
      name=systemd) mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o nosuid,nodev,noexec,none,name=systemd cgroup /sys/fs/cgroup/systemd ;;
      name=*) ;;
      *) mkdir -p "/sys/fs/cgroup/$ctrl"; mount -t cgroup -o "nosuid,nodev,noexec,$ctrl" cgroup "/sys/fs/cgroup/$ctrl"
         if [[ $ctrl == *,* ]]; then IFS=, read -ra parts <<<"$ctrl"; for p in "${parts[@]}"; do ln -s "$ctrl" "/sys/fs/cgroup/$p"; done; fi ;;
    esac
  done < /proc/self/cgroup
  # systemd (legacy/hybrid) wants to mount every enabled v1 controller itself, joined as
  # cpu,cpuacct and net_cls,net_prio. Those not mounted as separate v1 hierarchies on the host
  # would be mounted as NEW host-wide hierarchies (or fail with EBUSY and make PID1 freeze),
  # so occupy the paths with tiny read-only placeholders: systemd sees "already mounted".
  while read -r name hier _ enabled; do
    [[ $name == \#* || $enabled != 1 ]] && continue
    case $name in cpu|cpuacct) p="cpu,cpuacct" ;; net_cls|net_prio) p="net_cls,net_prio" ;; *) p=$name ;; esac
    for q in "$p" "$name"; do
      if [ ! -e "/sys/fs/cgroup/$q" ]; then mkdir -p "/sys/fs/cgroup/$q"; mount -t tmpfs -o ro,size=4k,mode=0555 sysd-placeholder "/sys/fs/cgroup/$q"; fi
    done
  done < /proc/cgroups
  mount -o remount,ro /sys/fs/cgroup
fi
# our pty becomes the manager's console (otherwise PID1 writes to the machine's real /dev/console)
mount --bind "$SYSD_CONSOLE" /dev/console
hostname sysd-test
echo "sandbox-init: setup done"
# wait until the host side has moved the launcher processes out of our cgroup-ns root
for _ in $(seq 100); do [ -e "${SYSD_GO:-/nonexistent}" ] && break; sleep 0.05; done
# private /tmp (after the wait: SYSD_GO may live under the host's /tmp). The unit folders may
# live there too: bind them under /run first and give systemd those paths.
unit_path=; i=0
IFS=: read -ra dirs <<<"$SYSD_UNITS"
for d in "${dirs[@]}"; do
  mkdir -p "/run/sandbox-units/$i"; mount --bind "$d" "/run/sandbox-units/$i"
  unit_path=${unit_path:+$unit_path:}/run/sandbox-units/$i; i=$((i + 1))
done
mount -t tmpfs -o mode=1777,nosuid,nodev sysd-tmp /tmp
echo "sandbox-init: exec systemd"
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
  container=sysd-test SYSTEMD_UNIT_PATH="$unit_path" SYSTEMD_LOG_LEVEL="${SYSD_LOG_LEVEL:-info}" SYSTEMD_LOG_COLOR=0 \
  setpriv --bounding-set -sys_module,-sys_time,-sys_rawio \
  "$SYSD_SYSTEMD" --system --unit="$SYSD_TARGET" --log-target=journal --show-status=no
