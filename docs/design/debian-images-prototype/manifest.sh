#!/bin/bash
# manifest.sh DIR : path type mode uid gid size [sha256|linktarget]  (no mtimes: Cairn clamps them)
cd "$1" || exit 1
{ find . \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o ! -type f -printf '%p %y %m %U %G %l\n'
  find . \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o -type f -printf '%p\0' | xargs -0 -r sha256sum | awk '{print $2, "sha", substr($1,1,16)}'
  find . \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o -type f -printf '%p f %m %U %G %s\n'; } | LC_ALL=C sort
