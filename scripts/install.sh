#!/usr/bin/env bash
# Installs certd from this checkout as real files, for systemd (see systemd/README.md):
#   PREFIX/lib/certd/            the package (bin/, dist/, production node_modules from the lockfile)
#   PREFIX/bin/certd             -> PREFIX/lib/certd/bin/certd
#   PREFIX/share/doc/certd/      README.md, systemd/README.md, docs/, config.example.yaml
# and, with --units, the systemd units, sysusers.d and tmpfiles.d files under PREFIX/lib.
#
#   sudo scripts/install.sh                  PREFIX=/usr
#   sudo scripts/install.sh --units          also the units (then: systemd-sysusers, systemd-tmpfiles --create)
#   scripts/install.sh --prefix /opt/x       elsewhere (override ExecStart= with `systemctl edit certd`)
#
# Nothing installed points back into the checkout, so the service runs with ProtectHome=yes and
# the checkout may be removed. The dependencies are the lockfile's (`npm ci --omit=dev`); the
# native addons (pkcs11js, unix-dgram) are built for this machine's Node. Re-running replaces the
# previous install in one rename.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/usr
UNITS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --units) UNITS=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
PREFIX=$(mkdir -p "$PREFIX" && cd "$PREFIX" && pwd)
DEST=$PREFIX/lib/certd

[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent
stage=$(mktemp -d "${TMPDIR:-/tmp}/certd-install.XXXXXX")
trap 'rm -rf "$stage"' EXIT
tarball=$(npm pack --silent --pack-destination "$stage" | tail -1)
tar xzf "$stage/$tarball" -C "$stage"
cp package-lock.json "$stage/package/"
(
  cd "$stage/package"
  # The package is already built: no compiler at install time.
  npm pkg delete scripts.prepare
  npm ci --omit=dev --no-audit --no-fund --loglevel=error
)
mkdir -p "$PREFIX/lib" "$PREFIX/bin"
rm -rf "$DEST.new"
cp -a "$stage/package" "$DEST.new"
chmod -R u=rwX,go=rX "$DEST.new"
if [ -e "$DEST" ]; then mv "$DEST" "$DEST.old"; fi
mv "$DEST.new" "$DEST"
rm -rf "$DEST.old"
ln -sfn "$DEST/bin/certd" "$PREFIX/bin/certd"

doc=$PREFIX/share/doc/certd
mkdir -p "$doc/systemd"
cp README.md config.example.yaml "$doc/"
cp -r docs "$doc/"
cp systemd/README.md "$doc/systemd/"

if [ "$UNITS" = 1 ]; then
  mkdir -p "$PREFIX/lib/systemd/system" "$PREFIX/lib/sysusers.d" "$PREFIX/lib/tmpfiles.d"
  cp systemd/*.service systemd/*.timer systemd/*.path "$PREFIX/lib/systemd/system/"
  cp systemd/sysusers.d/certd.conf "$PREFIX/lib/sysusers.d/"
  cp systemd/tmpfiles.d/certd.conf "$PREFIX/lib/tmpfiles.d/"
fi
echo "$("$PREFIX/bin/certd" --version) installed in $DEST ($PREFIX/bin/certd)"
