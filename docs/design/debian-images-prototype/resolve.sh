#!/bin/sh
# resolve.sh OUT.lock PKG... : closure by apt's solver in the private state; writes name version arch size sha256 url
set -eu
export APT_CONFIG=${APT_CONFIG:-/work/research13/apt/apt.conf}
out=$1; shift
apt-get install -s -qq "$@" | sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]* \[\([a-z0-9]*\)\]).*$/\1 \2 \3/p' | sort > "$out.inst"
apt-get install --print-uris -qq -o Acquire::ForceHash=SHA256 "$@" |
  awk '{u=$1; gsub("\x27","",u); f=$2; split(f,a,"_"); print a[1], $3, substr($4,8), u}' | sort > "$out.uris"
join "$out.inst" "$out.uris" > "$out"
rm "$out.inst" "$out.uris"
wc -l < "$out"
