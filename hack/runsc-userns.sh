#!/usr/bin/env bash
# What runsc needs to run, checkpoint and restore an agent with no host privilege: as host uid
# 65534 in a fresh user namespace, with a bounding set cut to what is tried, under a /proc
# masked as runc masks a container's. Needs root (to make the unprivileged user and the masks),
# Go, and a static busybox. Prints one line per case (docs/checkpoint.md, "Least privilege").
#
#   bash hack/runsc-userns.sh                 # the pinned current runsc, built once
#   RUNSC=/usr/bin/runsc bash hack/runsc-userns.sh
set -euo pipefail

GVISOR=v0.0.0-20260905035102-160fafc42237
cache=${SANDMAN_CACHE:-$HOME/.cache/sandman}/runsc-$GVISOR
if [[ -z "${RUNSC:-}" ]]; then
  if [[ ! -x "$cache/runsc" ]]; then
    CGO_ENABLED=0 GOBIN="$cache" go install "gvisor.dev/gvisor/runsc@$GVISOR"
  fi
  RUNSC=$cache/runsc
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/"{tmp,proc,dev,sys} "$work/state" "$work/image" "$work/logs"
cp /bin/busybox "$work/bundle/rootfs/bin/"
for applet in sh sleep cat echo; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
(cd "$work/bundle" && "$RUNSC" spec -- /bin/sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done')
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["root"]["readonly"] = False
config["process"]["terminal"] = False
json.dump(config, open(sys.argv[1], "w"))
PY
# The unprivileged user cannot reach root's home: it runs a copy.
cp "$RUNSC" "$work/runsc"
RUNSC=$work/runsc
chmod 755 "$work" "$work/runsc"
chown -R 65534:65534 "$work/bundle" "$work/state" "$work/image" "$work/logs"

# One case: $1 the bounding set, $2 the platform, $3 "masked" for runc's /proc masks.
one() {
  local runsc="$RUNSC --root=$work/state --platform=$2 --network=none --ignore-cgroups"
  local steps="cd $work/bundle
    $runsc run --detach c >$work/logs/run.log 2>&1 || { echo \"run: \$(tail -1 $work/logs/run.log)\"; exit 0; }
    sleep 1; before=\$($runsc exec c cat /tmp/count)
    rm -rf $work/image/*
    $runsc checkpoint --image-path=$work/image c >$work/logs/ck.log 2>&1 || { echo \"checkpoint: \$(tail -1 $work/logs/ck.log)\"; exit 0; }
    $runsc delete -force c 2>/dev/null
    $runsc restore --detach --image-path=$work/image c >$work/logs/rs.log 2>&1 || { echo \"restore: \$(tail -1 $work/logs/rs.log)\"; exit 0; }
    sleep 0.5; after=\$($runsc exec c cat /tmp/count); $runsc delete -force c
    echo \"works: \$before before, \$after after the restore\""
  local masks=""
  if [[ "${3:-}" == masked ]]; then
    masks='for f in /proc/keys /proc/latency_stats /proc/timer_list /proc/sched_debug; do [ -e $f ] && mount --bind /dev/null $f; done
      for d in /proc/acpi /proc/scsi; do [ -d $d ] && mount -t tmpfs -o ro tmpfs $d; done
      for d in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do [ -e $d ] && mount --bind $d $d && mount -o remount,bind,ro $d; done'
  fi
  rm -rf "${work:?}/state/"*
  printf '%-45s %-8s %-7s ' "$1" "$2" "${3:-plain}"
  unshare -m --propagation private -- bash -c "$masks
    setpriv --reuid=65534 --regid=65534 --clear-groups unshare -Urm -- \
      setpriv --bounding-set='$1' -- bash -c '$steps'" 2>&1 | tail -1
}

one +all systrap
one -all,+sys_admin,+setfcap systrap
one -all,+sys_admin,+setfcap ptrace
one -all,+sys_admin,+setfcap systrap masked
one -all,+sys_admin systrap
one -all,+setfcap systrap
