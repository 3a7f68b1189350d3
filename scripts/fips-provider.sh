#!/usr/bin/env bash
# Builds the OpenSSL 3.0 FIPS provider (fips.so) from Debian's OpenSSL source once, and caches it
# with its fipsmodule.cnf and an openssl.cnf that Node, the openssl CLI and nginx read:
#   .cache/ossl-fips/fips.so          the provider
#   .cache/ossl-fips/fipsmodule.cnf   written by `openssl fipsinstall` (the module's MAC and self-test state)
#   .cache/ossl-fips/openssl.cnf      activates fips + base (nodejs_conf for Node, openssl_conf for the rest)
# Idempotent: a second run checks the cache and exits. Prints the cache directory on stdout.
#   scripts/fips-provider.sh            build if needed, then check
#   scripts/fips-provider.sh --check    check only (exit 1 when the cache is missing or broken)
# Use: OPENSSL_CONF=.cache/ossl-fips/openssl.cnf OPENSSL_MODULES=.cache/ossl-fips node --enable-fips
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/.cache/ossl-fips
NODE=${NODE:-node}

# The installed provider works when Node (FIPS mode on) loads it: getFips() 1, SHA-256 right, MD5 refused.
check() {
  [ -f "$OUT/fips.so" ] && [ -f "$OUT/fipsmodule.cnf" ] && [ -f "$OUT/openssl.cnf" ] || return 1
  OPENSSL_CONF="$OUT/openssl.cnf" OPENSSL_MODULES="$OUT" "$NODE" --enable-fips -e '
    const c = require("node:crypto");
    if (c.getFips() !== 1) throw new Error("getFips() is " + c.getFips());
    if (c.createHash("sha256").update("abc").digest("hex") !== "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") throw new Error("SHA-256 wrong");
    let md5 = true; try { c.createHash("md5").update("abc").digest("hex"); } catch { md5 = false; }
    if (md5) throw new Error("MD5 still works");
  ' >/dev/null 2>&1
}

write_conf() {
  cat > "$OUT/openssl.cnf" <<EOF
# OpenSSL configuration for FIPS mode with the provider built by scripts/fips-provider.sh.
# Node reads the nodejs_conf section, the openssl CLI and nginx read openssl_conf.
config_diagnostics = 1
openssl_conf = openssl_init
nodejs_conf = openssl_init

.include $OUT/fipsmodule.cnf

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect

[provider_sect]
fips = fips_sect
base = base_sect

[base_sect]
activate = 1

[algorithm_sect]
default_properties = fips=yes
EOF
}

if [ "${1:-}" = "--check" ]; then
  check && { echo "$OUT"; exit 0; }
  echo "fips-provider: no working FIPS provider in $OUT (run scripts/fips-provider.sh)" >&2
  exit 1
fi
if check; then echo "$OUT"; exit 0; fi

start=$(date +%s)
mkdir -p "$OUT"
SRC=$ROOT/.cache/ossl-fips-src
if ! ls -d "$SRC"/openssl-3.0.*/ >/dev/null 2>&1; then
  # Debian's source package; deb-src for bookworm is added when this machine has none.
  if ! grep -rqs '^\(deb-src\|Types:.*deb-src\)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    [ "$(id -u)" = 0 ] || { echo "fips-provider: needs deb-src entries for bookworm (run as root once)" >&2; exit 1; }
    cat > /etc/apt/sources.list.d/bookworm-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq
  fi
  for tool in dpkg-source make gcc perl; do
    command -v "$tool" >/dev/null || {
      [ "$(id -u)" = 0 ] || { echo "fips-provider: $tool is missing (apt-get install -y dpkg-dev build-essential)" >&2; exit 1; }
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev build-essential perl >/dev/null
    }
  done
  rm -rf "$SRC"; mkdir -p "$SRC"
  # A mirror may miss the Debian packaging of the newest security upload while it has the
  # upstream tarball: fips.so is built from upstream's code either way.
  (cd "$SRC" && apt-get source -qq openssl >/dev/null 2>&1) || true
  if ! ls -d "$SRC"/openssl-3.0.*/ >/dev/null 2>&1; then
    orig=$(ls "$SRC"/openssl_3.0.*.orig.tar.gz 2>/dev/null | head -1)
    [ -n "$orig" ] || { echo "fips-provider: apt-get source openssl fetched nothing (check deb-src entries, apt-get update)" >&2; exit 1; }
    tar -C "$SRC" -xzf "$orig"
  fi
fi
dir=$(ls -d "$SRC"/openssl-3.0.*/ | head -1)
echo "fips-provider: building fips.so from $(basename "$dir") (Node's OpenSSL: $("$NODE" -p process.versions.openssl))" >&2
cd "$dir"
if [ ! -f Makefile ]; then
  # Only the provider is wanted: no tests; -fPIC for the shared module.
  ./Configure enable-fips no-tests linux-x86_64 >/dev/null
fi
make -s -j"$(nproc)" build_generated >/dev/null
make -s -j"$(nproc)" providers/fips.so >/dev/null
install -m 0644 providers/fips.so "$OUT/fips.so"
cd "$ROOT"
# fipsinstall runs the module's self-tests and writes its MAC; the CLI must load this fips.so.
openssl fipsinstall -module "$OUT/fips.so" -out "$OUT/fipsmodule.cnf" -provider_name fips >/dev/null 2>"$OUT/fipsinstall.log" \
  || { cat "$OUT/fipsinstall.log" >&2; exit 1; }
write_conf
if ! check; then
  echo "fips-provider: built $OUT/fips.so but Node does not run FIPS with it" >&2
  OPENSSL_CONF="$OUT/openssl.cnf" OPENSSL_MODULES="$OUT" "$NODE" --enable-fips -p 'require("crypto").getFips()' >&2 || true
  exit 1
fi
echo "fips-provider: built and checked in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
