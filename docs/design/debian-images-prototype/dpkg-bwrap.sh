#!/bin/bash
# dpkg-bwrap.sh STAGE : Cairn-style install of the resolved set, host untouched.
#  A) extract the ?essential closure with dpkg-deb --fsys-tarfile | tar --keep-directory-symlink (merged /usr)
#  B) bwrap-rooted `dpkg --install --force-depends` of that closure (runs base-passwd preinst etc.)
#  C) bwrap-rooted `dpkg --install` of the rest, in apt's order (apt-get -s Inst order)
set -euo pipefail
S=$1; R=/work/research13; CACHE=$R/apt/var/cache/apt/archives
export APT_CONFIG=$R/apt/apt.conf
PKGS=('?essential' '?priority(required)' systemd systemd-sysv openssh-server udev dbus ${EXTRA:-})
t0=$(date +%s.%N); ts() { printf '%-28s %6.2fs\n' "$1" "$(echo "$(date +%s.%N) - $t0" | bc)"; }
rm -rf "$S"; mkdir -p "$S"
# file name for each package in apt's install order
order() { apt-get install -s -qq "$@" | sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1 \2/p' |
  while read -r p v; do v=${v/:/%3a}; echo "$CACHE/${p}_${v}_"*.deb; done; }
mapfile -t ESS < <(order '?essential' ${EXTRA_ESS:-}); mapfile -t ALL < <(order "${PKGS[@]}")
declare -A isess; for d in "${ESS[@]}"; do isess[$d]=1; done
REST=(); for d in "${ALL[@]}"; do [ -n "${isess[$d]:-}" ] || REST+=("$d"); done
echo "essential closure: ${#ESS[@]}  rest: ${#REST[@]}"; ts resolve
# skeleton: merged /usr, empty dpkg db
mkdir -p "$S"/usr/{bin,sbin,lib,lib64} "$S"/var/lib/dpkg/{info,updates,triggers} "$S"/etc "$S"/{dev,proc,sys,tmp,run}
for d in bin sbin lib lib64; do ln -s usr/$d "$S/$d"; done
: > "$S/var/lib/dpkg/status"; : > "$S/var/lib/dpkg/available"; echo amd64 > "$S/var/lib/dpkg/arch"
for d in "${ESS[@]}"; do dpkg-deb --fsys-tarfile "$d" | tar -C "$S" --keep-directory-symlink -x; done
ts "A extract ${#ESS[@]}"
printf '#!/bin/sh\nexit 101\n' > "$S/usr/sbin/policy-rc.d"; chmod 755 "$S/usr/sbin/policy-rc.d"
SB=(bwrap --bind "$S" / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /run --ro-bind "$CACHE" /debs
    --unshare-pid --unshare-ipc --unshare-uts --unshare-net --die-with-parent --clearenv
    --setenv PATH /usr/sbin:/usr/bin:/sbin:/bin --setenv DEBIAN_FRONTEND noninteractive
    --setenv DEBCONF_NONINTERACTIVE_SEEN true --setenv LC_ALL C.UTF-8 --setenv HOME /root
    --setenv SOURCE_DATE_EPOCH "${SOURCE_DATE_EPOCH:-0}")
in_sb() { local a=(); for d in "${@:2}"; do a+=("/debs/${d##*/}"); done; "${SB[@]}" dpkg $DPKGOPT $1 "${a[@]}"; }
DPKGOPT=${DPKGOPT:-}
in_sb "--install --force-depends" "${ESS[@]}" > "$S.phaseB.log" 2>&1; ts "B dpkg --install essential"
# C: apt (host binary, private config) orders the rest and drives dpkg; dpkg runs in the sandbox
cat > "$S.dpkg" <<W
#!/bin/sh
exec ${SB[*]} --ro-bind $CACHE $CACHE --ro-bind $S.tmp $S.tmp dpkg $DPKGOPT "\$@"
W
chmod +x "$S.dpkg"; rm -rf "$S.tmp"; mkdir -p "$S.tmp"
TMPDIR=$S.tmp apt-get install -y -q -o Dir::State::status="$S/var/lib/dpkg/status" -o Dir::Bin::dpkg="$S.dpkg" \
  -o DPkg::Options::=--force-confold -o Dpkg::Use-Pty=false -o APT::Keep-Downloaded-Packages=true \
  "${PKGS[@]}" > "$S.phaseC.log" 2>&1; ts "C apt-get install rest (dpkg in bwrap)"
"${SB[@]}" dpkg --audit; "${SB[@]}" dpkg --configure -a; ts "audit"
rm -f "$S/usr/sbin/policy-rc.d"
