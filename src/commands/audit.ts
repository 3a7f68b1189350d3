import type { Command } from '../cli.js';
import { EXIT_FAIL, EXIT_OK, EXIT_USAGE } from '../cli.js';
import { HEAD_SUFFIX, verifyAuditFile } from '../audit.js';
import { loadConfig } from '../config.js';
import { messageOf } from '../errors.js';

export const auditVerifyCommand: Command = {
  summary: 'certd audit verify: checks the hash chain of the audit trail.',
  usage: 'certd audit verify [--file F] [--config F] [--json]',
  help: `Options:
  --file F         the trail to check (default: audit_log of the config)
  -c, --config F   config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml); read only without --file
  --json           {"ok", "file", "records", "firstBad": {"line", "seq", "reason"}, "head", "warnings"}

Every line must parse, match its own hash, name the hash of the line before it as "prev" (the
first: 64 zeros), and carry seq 1, 2, 3 ... in order; the head file (F${HEAD_SUFFIX}) must not
record more than the file holds. So an edited, deleted, reordered or cut-off record is found.
Exit 0 intact; 1 broken (the first bad record is named by line number, seq and why); 2 usage.`,
  options: { file: { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean' } },
  async run(v, _p, io) {
    let file = typeof v['file'] === 'string' ? v['file'] : undefined;
    if (file === undefined) {
      const loaded = loadConfig(typeof v['config'] === 'string' ? v['config'] : undefined, io.env);
      const configured = loaded.config.audit_log;
      if (!configured) {
        io.err(`certd audit verify: ${loaded.path} sets no audit_log; give the trail with --file F\n`);
        return EXIT_USAGE;
      }
      file = loaded.resolvePath(configured);
    }
    let result;
    try {
      result = await verifyAuditFile(file);
    } catch (err) {
      io.err(`certd audit verify: reading ${file}: ${messageOf(err)}\n`);
      return EXIT_USAGE;
    }
    if (v['json'] === true) {
      io.out(`${JSON.stringify({ file, ...result }, null, 2)}\n`);
    } else if (result.ok) {
      io.out(`${file}: intact, ${result.records} record(s)${result.head ? `; head at seq ${result.head.seq}` : ''}\n`);
    } else if (result.firstBad) {
      const b = result.firstBad;
      io.out(`${file}: BROKEN at line ${b.line} (seq ${b.seq ?? '?'}): ${b.reason}; ${result.records} record(s) before it are intact\n`);
    }
    for (const w of result.warnings) io.err(`certd audit verify: warning: ${w}\n`);
    return result.ok ? EXIT_OK : EXIT_FAIL;
  },
};
