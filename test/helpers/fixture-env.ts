/**
 * The environment for the system `openssl` CLI when it makes test fixtures (keys, certificates,
 * corpus cases, some deliberately weak): outside FIPS mode, also when the run is in FIPS mode
 * (CERTD_TEST_FIPS=1 sets OPENSSL_CONF for every process). What certd and nginx run keeps the
 * FIPS environment; only fixture making drops it.
 */
export function fixtureEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['OPENSSL_CONF'];
  delete env['OPENSSL_MODULES'];
  return env;
}

/** Whether this test run is the FIPS-mode pass (scripts/run-tests.mjs with CERTD_TEST_FIPS=1). */
export const FIPS_RUN = process.env['CERTD_TEST_FIPS'] === '1';
