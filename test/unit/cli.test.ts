/**
 * Command-line conventions, in process (no child per case): short options, group help, the
 * environment certd reads, and README's command table against what each command's --help lists.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type Io, main } from '../../src/cli.js';

const dir = mkdtempSync('/dev/shm/certd-unit-cli-');
after(() => rmSync(dir, { recursive: true, force: true }));

async function certd(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: Io = { out: (t) => void (out += t), err: (t) => void (err += t), env: { CERTD_LOG_LEVEL: 'error', ...env }, isTTY: false };
  const code = await main(argv, io);
  return { code, out, err };
}

function config(name: string, certificates: string): string {
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, `state_dir: ${dir}/${name}-state\nfips_runtime: off\n${certificates}`);
  return path;
}

const oneCert = `certificates:
  - name: web
    source: { type: local-ca, dns_names: [web.certd.test], ttl: 24h }
    targets: [{ type: tmpfs, dir: DIR }]
`;

/** The commands of README's table and the flags its row names, e.g. "rotate" -> {--now, --config, ...}. */
function readmeTable(): Map<string, Set<string>> {
  const readme = readFileSync('README.md', 'utf8');
  const section = readme.slice(readme.indexOf('\n## Commands\n') + '\n## Commands\n'.length);
  const rows = new Map<string, Set<string>>();
  for (const line of section.split('\n')) {
    if (line.startsWith('## ')) break;
    const m = /^\| `certd ((?:audit )?[a-z]+)([^`]*)`/.exec(line);
    if (!m) continue;
    rows.set(m[1]!, new Set([...(m[2] ?? '').matchAll(/--[a-z][a-z0-9-]*/g)].map((f) => f[0])));
  }
  return rows;
}

/** The long options a command's --help explains: lines starting "  --flag" or "  -c, --flag". */
function helpFlags(help: string): Set<string> {
  const flags = new Set<string>();
  for (const m of help.matchAll(/^ {2}(?:-[a-zA-Z], )?(--[a-z][a-z0-9-]*)/gm)) flags.add(m[1]!);
  flags.delete('--help');
  return flags;
}

describe('certd command line: conventions', () => {
  it('-V prints the version, as --version does', async () => {
    const long = await certd(['--version']);
    const short = await certd(['-V']);
    assert.equal(short.code, 0, short.err);
    assert.equal(short.out, long.out);
    assert.match(short.out, /^certd \d+\.\d+\.\d+ /);
  });

  it('-c FILE is --config FILE for every command that reads a config', async () => {
    const path = config('short-c', oneCert.replace('DIR', `${dir}/short-c-out`));
    const r = await certd(['status', '-c', path, '--json']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual((JSON.parse(r.out) as { certificates: { name: string }[] }).certificates.map((c) => c.name), ['web']);
    for (const command of [['run'], ['rotate'], ['status'], ['report'], ['audit', 'verify']]) {
      const help = await certd([...command, '--help']);
      assert.match(help.out, /^ {2}-c, --config F/m, `certd ${command.join(' ')} --help shows -c`);
    }
  });

  it('certd audit --help (and a bare certd audit) explain the audit commands', async () => {
    const help = await certd(['audit', '--help']);
    assert.equal(help.code, 0, help.err);
    assert.match(help.out, /certd audit verify/);
    assert.doesNotMatch(help.err, /unknown command/);
    const bare = await certd(['audit']);
    assert.equal(bare.code, 2, 'no subcommand is a usage error');
    assert.match(bare.err, /certd audit verify/);
    const sub = await certd(['audit', 'verify', '-h']);
    assert.equal(sub.code, 0);
    assert.match(sub.out, /--file F/);
  });

  it('CERTD_CONFIG names the config; a bad CERTD_LOG_LEVEL or CERTD_LOG_FORMAT is a usage error that names the variable', async () => {
    const path = config('env', oneCert.replace('DIR', `${dir}/env-out`));
    const r = await certd(['status', '--json'], { CERTD_CONFIG: path });
    assert.equal(r.code, 0, r.err);
    assert.equal((JSON.parse(r.out) as { certificates: { name: string }[] }).certificates[0]?.name, 'web');
    const level = await certd(['rotate', '--now', '--dry-run'], { CERTD_CONFIG: path, CERTD_LOG_LEVEL: 'loud' });
    assert.equal(level.code, 2);
    assert.match(level.err, /CERTD_LOG_LEVEL "loud": expected one of debug, info, warn, error/);
    const format = await certd(['rotate', '--now', '--dry-run'], { CERTD_CONFIG: path, CERTD_LOG_FORMAT: 'xml' });
    assert.equal(format.code, 2);
    assert.match(format.err, /CERTD_LOG_FORMAT "xml": expected one of json, text, auto/);
  });

  it('--help and README document CERTD_CONFIG, CERTD_CONFIG_YAML, CERTD_LOG_LEVEL and CERTD_LOG_FORMAT', async () => {
    const help = (await certd(['--help'])).out;
    const readme = readFileSync('README.md', 'utf8');
    for (const name of ['CERTD_CONFIG', 'CERTD_CONFIG_YAML', 'CERTD_LOG_LEVEL', 'CERTD_LOG_FORMAT']) {
      assert.match(help, new RegExp(`^ {2}${name} `, 'm'), `certd --help explains ${name}`);
      assert.match(readme, new RegExp(`^\\| \`${name}\` \\|`, 'm'), `README's environment table has ${name}`);
    }
  });

  it('certificates: [] warns that nothing will be deployed', async () => {
    const path = config('empty', 'certificates: []\n');
    for (const argv of [['status', '--config', path], ['rotate', '--now', '--config', path]]) {
      const r = await certd(argv);
      assert.equal(r.code, 0, r.err);
      assert.match(r.err, /warning: config .*empty\.yaml configures no certificates: certd has nothing to deploy/, argv.join(' '));
    }
    const none = await certd(['status', '--config', config('nokey', '')]);
    assert.match(none.err, /configures no certificates/, 'a config without the key is empty too');
    const one = await certd(['status', '--config', config('one', oneCert.replace('DIR', `${dir}/one-out`))]);
    assert.doesNotMatch(one.err, /configures no certificates/);
  });

  it("README's command table lists every command and every flag its --help explains", async () => {
    const table = readmeTable();
    const commands = ['run', 'rotate', 'validate', 'status', 'verify', 'fips', 'report', 'audit verify'];
    assert.deepEqual([...table.keys()].sort(), [...commands].sort(), 'one row per command');
    for (const name of commands) {
      const help = await certd([...name.split(' '), '--help']);
      assert.equal(help.code, 0, name);
      const flags = helpFlags(help.out);
      assert.ok(flags.size > 0, `certd ${name} --help lists its options`);
      const row = table.get(name)!;
      const missing = [...flags].filter((f) => !row.has(f));
      assert.deepEqual(missing, [], `README's row for certd ${name} lacks ${missing.join(', ')}`);
    }
  });
});
