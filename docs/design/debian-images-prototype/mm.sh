#!/bin/sh
# mm.sh OUTDIR [extra mmdebstrap args] : minbase(required) + the EFLOW set, warm cache via hardlinks
set -eu
out=$1; shift
CACHE=/work/research13/apt/var/cache/apt/archives
rm -rf "$out"
exec nice -n 10 mmdebstrap --mode=root --variant=required \
  --include=systemd,systemd-sysv,openssh-server,udev,dbus \
  --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives && cp -l $CACHE/*.deb \"\$1\"/var/cache/apt/archives/" \
  "$@" bookworm "$out" /etc/apt/sources.list.d/debian.sources
