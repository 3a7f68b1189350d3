// The ECS/EKS container credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI): a GET that
// answers temporary credentials only when the Authorization header is exactly the token the
// container was given, as the ECS agent and the EKS Pod Identity agent do.
import { listenHttp } from './peer-kit.js';
import type { AwsCredentials } from './aws-sigv4.js';

export interface EcsCredentialsRequest {
  method: string;
  path: string;
  authorized: boolean;
}

export interface EcsCredentialsServer {
  /** Full URI including the path, for AWS_CONTAINER_CREDENTIALS_FULL_URI. */
  readonly url: string;
  readonly requests: EcsCredentialsRequest[];
  close(): Promise<void>;
}

export interface EcsCredentialsOptions {
  token: string;
  credentials: AwsCredentials & { sessionToken: string };
  /** How long the handed-out credentials claim to live (default one hour). */
  lifetimeMs?: number;
  now?: () => number;
}

export async function startEcsCredentialsServer(opts: EcsCredentialsOptions): Promise<EcsCredentialsServer> {
  const now = opts.now ?? Date.now;
  const requests: EcsCredentialsRequest[] = [];
  const listening = await listenHttp((req, res) => {
    req.resume();
    const authorized = req.headers['authorization'] === opts.token;
    requests.push({ method: req.method ?? '', path: req.url ?? '', authorized });
    if (requests.length > 1000) requests.shift();
    let status = 200;
    let body: unknown;
    if (req.method !== 'GET') {
      status = 405;
      body = { Code: 'MethodNotAllowed', Message: 'Only GET is supported' };
    } else if (!authorized) {
      status = 401;
      body = { Code: 'AccessDenied', Message: 'Authorization token is missing or invalid' };
    } else {
      body = {
        AccessKeyId: opts.credentials.accessKeyId,
        SecretAccessKey: opts.credentials.secretAccessKey,
        Token: opts.credentials.sessionToken,
        Expiration: new Date(now() + (opts.lifetimeMs ?? 3_600_000)).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      };
    }
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  });
  return {
    url: `${listening.url}/v2/credentials/certd-task`,
    requests,
    close: () => listening.close(),
  };
}
