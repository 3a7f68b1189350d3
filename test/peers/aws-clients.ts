// SDK client configuration pointing at an AWS peer, shared by the tests that drive one.
import type { AwsCredentials, AwsPeer } from './aws-peer.js';
import { DEFAULT_TEST_CREDENTIALS } from './aws-peer.js';

export interface PeerClientConfig {
  endpoint: string;
  region: string;
  credentials: AwsCredentials;
}

/** Endpoint, region and static credentials for SecretsManagerClient, SSMClient or KMSClient. */
export function peerClientConfig(peer: AwsPeer, credentials: AwsCredentials = DEFAULT_TEST_CREDENTIALS): PeerClientConfig {
  return { endpoint: peer.url, region: peer.region, credentials: { ...credentials } };
}
