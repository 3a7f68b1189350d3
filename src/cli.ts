/**
 * certd's command line. Exit codes: 0 success, 1 a certificate failed / a finding, 2 usage or
 * configuration error. `--json` prints exactly one JSON document on stdout; logs go to stderr.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CertdError, messageOf } from './errors.js';

export const EXIT_OK = 0;
export const EXIT_FAIL = 1;
export const EXIT_USAGE = 2;

export interface Io {
  out(text: string): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
  isTTY: boolean;
}

/**
 * A reader that went away (`certd status | head -1`) is not an error of certd's: once stdout or
 * stderr reports EPIPE, what would have gone there is dropped and the command finishes as it
 * would have (locks released, state recorded), with its own exit code. Without a listener Node
 * throws the EPIPE from the stream and prints its stack trace.
 */
function quietOnClose(stream: NodeJS.WriteStream): (text: string) => void {
  let closed = false;
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') closed = true;
    else throw err;
  });
  return (text) => {
    if (!closed && !stream.destroyed) stream.write(text);
  };
}

let processIoMade: Io | undefined;
function processIo(): Io {
  processIoMade ??= { out: quietOnClose(process.stdout), err: quietOnClose(process.stderr), env: process.env, isTTY: Boolean(process.stdout.isTTY) };
  return processIoMade;
}

type Options = NonNullable<ParseArgsConfig['options']>;

interface Command {
  summary: string;
  usage: string;
  help: string;
  options: Options;
  run(values: Record<string, unknown>, positionals: string[], io: Io): Promise<number>;
}

const HELP = `certd: keeps TLS certificates and keys deployed, FIPS-checked and verified.

Usage: certd <command> [options]

Commands:
  run            run the daemon (schedule, control socket, metrics)
  rotate --now   one full cycle now for all (or one) certificates
  validate       check certificate/key files against the FIPS policy; deploys nothing
  status         what is deployed for each certificate and how its last cycle ended
  verify         TLS probe of a server: served chain, protocols, non-FIPS suites
  fips           this host's and runtime's FIPS state
  report         compliance evidence for assessors (SC-12, SC-13, SC-17)
  audit verify   check the hash chain of the audit trail

Global options:
  -c, --config F  config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml)
  --json          one JSON document on stdout
  -h, --help      help for a command:  certd <command> --help
  -V, --version   print the version

Environment:
  CERTD_CONFIG       the config file when --config is not given
  CERTD_CONFIG_YAML  the config's YAML itself, when neither --config nor CERTD_CONFIG is set
  CERTD_LOG_LEVEL    debug | info | warn | error; overrides the config's log.level
  CERTD_LOG_FORMAT   json | text | auto (text on a terminal); overrides the config's log.format

Exit codes: 0 success; 1 a certificate failed or a finding; 2 usage or configuration error.
`;

const commands: Record<string, () => Promise<Command>> = {
  rotate: async () => (await import('./commands/rotate.js')).rotateCommand,
  validate: async () => (await import('./commands/validate.js')).validateCommand,
  status: async () => (await import('./commands/status.js')).statusCommand,
  run: async () => (await import('./commands/run.js')).runCommand,
  fips: async () => (await import('./commands/fips.js')).fipsCommand,
  verify: async () => (await import('./commands/verify.js')).verifyCommand,
  'audit verify': async () => (await import('./commands/audit.js')).auditVerifyCommand,
  report: async () => (await import('./commands/report.js')).reportCommand,
};

export type { Command };

async function version(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const AUDIT_HELP = `certd audit: the audit trail (audit_log), an append-only, hash-chained record of
every deployment, rollback, reload, verification and config reload.

Usage: certd audit <command> [options]

Commands:
  audit verify   check the hash chain of the trail:  certd audit verify --help
`;

/** A command's own options, with -c for --config wherever a command reads a config. */
function withShortOptions(options: Options): Options {
  const config = options['config'];
  return config && config.short === undefined ? { ...options, config: { ...config, short: 'c' } } : options;
}

export async function main(argv: readonly string[], io: Io = processIo()): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    io.out(HELP);
    return name === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (name === 'audit' && (rest.length === 0 || rest[0] === '-h' || rest[0] === '--help')) {
    if (rest.length === 0) {
      io.err(`certd audit: which audit command?\n\n${AUDIT_HELP}`);
      return EXIT_USAGE;
    }
    io.out(AUDIT_HELP);
    return EXIT_OK;
  }
  if (name === '--version' || name === '-V' || name === '-v' || name === 'version') {
    io.out(`certd ${await version()} (node ${process.versions.node})\n`);
    return EXIT_OK;
  }
  let commandName = name;
  let args = rest;
  if (name === 'audit') {
    commandName = `audit ${rest[0] ?? ''}`.trim();
    args = rest.slice(1);
  }
  const load = commands[commandName];
  if (!load) {
    io.err(`certd: unknown command "${commandName}"\n\n${HELP}`);
    return EXIT_USAGE;
  }
  const command = await load();
  if (args.includes('-h') || args.includes('--help')) {
    io.out(`${command.summary}\n\nUsage: ${command.usage}\n\n${command.help}\n`);
    return EXIT_OK;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: withShortOptions(command.options), strict: true, allowPositionals: false });
  } catch (err) {
    io.err(`certd ${commandName}: ${messageOf(err)}\nUsage: ${command.usage}\n(certd ${commandName} --help explains every option)\n`);
    return EXIT_USAGE;
  }
  try {
    // Before anything is done, so a mistyped CERTD_LOG_LEVEL stops every command alike.
    (await import('./commands/common.js')).logEnv(io.env);
    return await command.run(parsed.values, parsed.positionals, io);
  } catch (err) {
    const json = parsed.values['json'] === true;
    if (err instanceof CertdError && (err.code === 'E_CONFIG')) {
      if (json) io.out(`${JSON.stringify({ ok: false, error: err.toJSON() })}\n`);
      io.err(`certd ${commandName}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    if (json) io.out(`${JSON.stringify({ ok: false, error: err instanceof CertdError ? err.toJSON() : { code: 'E_INTERNAL', message: messageOf(err) } })}\n`);
    io.err(`certd ${commandName}: ${messageOf(err)}\n`);
    return EXIT_FAIL;
  }
}
