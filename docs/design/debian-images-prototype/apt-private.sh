#!/bin/sh
# Make a private apt state under $1 (default /work/research13/apt) and print the APT_CONFIG path.
set -eu
A=${1:-/work/research13/apt}
mkdir -p "$A/etc/apt/apt.conf.d" "$A/etc/apt/preferences.d" "$A/var/lib/apt/lists/partial" \
         "$A/var/cache/apt/archives/partial" "$A/var/lib/dpkg" "$A/var/log/apt"
: > "$A/var/lib/dpkg/status"          # empty: nothing "installed"
chmod -R a+rX "$A"                     # apt drops to _apt for downloads
cat > "$A/apt.conf" <<CONF
Dir "$A/";
Dir::State "$A/var/lib/apt/";
Dir::State::status "$A/var/lib/dpkg/status";
Dir::Cache "$A/var/cache/apt/";
Dir::Log "$A/var/log/apt/";
Dir::Etc "$A/etc/apt/";
Dir::Etc::SourceList "/etc/apt/sources.list";
Dir::Etc::SourceParts "/etc/apt/sources.list.d/";
Dir::Etc::Trusted "/etc/apt/trusted.gpg";
Dir::Etc::TrustedParts "/etc/apt/trusted.gpg.d/";
APT::Architecture "amd64";
APT::Architectures "amd64";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Debug::NoLocking "true";
pkgCacheGen::ForceEssential ",";
CONF
echo "$A/apt.conf"
