#!/bin/bash
# side by side, warm caches, same load: Cairn-style (extract+bwrap dpkg, unsafe-io) vs mmdebstrap vs mkosi 14
export SOURCE_DATE_EPOCH=1700000000
cd /work/research13
t() { local s=$(date +%s.%N); "$@" > /dev/null 2>&1; echo "$(basename $1) $(echo "$(date +%s.%N) - $s" | bc) rc=$?"; }
t env DPKGOPT=--force-unsafe-io scripts/dpkg-bwrap.sh /work/research13/db3
t scripts/mm.sh /work/research13/mm3 --dpkgopt=force-unsafe-io
(cd mkosi && t mkosi --force build)
t env DPKGOPT=--force-unsafe-io scripts/dpkg-bwrap.sh /work/research13/db4
du -sb db3 mm3 mkosi/out/root
