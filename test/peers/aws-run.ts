// Starts the AWS peer for manual use and benchmarks:
//   node dist/test/peers/aws-run.js [--quotas] [--short-pages]
// prints {"url","region","accessKeyId","secretAccessKey"} on one line and runs until SIGINT/SIGTERM.
// The credentials are the fixed test pair, which AWS itself never accepts.
import { DEFAULT_TEST_CREDENTIALS, startAwsPeer } from './aws-peer.js';

const args = new Set(process.argv.slice(2));
const peer = await startAwsPeer({ quotas: args.has('--quotas'), shortPages: args.has('--short-pages') });
process.stdout.write(`${JSON.stringify({
  url: peer.url,
  region: peer.region,
  accessKeyId: DEFAULT_TEST_CREDENTIALS.accessKeyId,
  secretAccessKey: DEFAULT_TEST_CREDENTIALS.secretAccessKey,
})}\n`);
const stop = (): void => {
  peer.close().then(() => process.exit(0), () => process.exit(1));
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
