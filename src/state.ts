/**
 * Last-good records: what is deployed for each certificate and how its last cycle ended. One
 * JSON file per certificate in `state_dir/certs/`, replaced atomically. No key material.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DeployedSummary } from './contracts.js';
import type { EndpointUse } from './endpoints.js';
import { writeFileAtomic } from './fsutil.js';
import type { Finding } from './policy/types.js';

export type CycleOutcome = 'deployed' | 'unchanged' | 'failed' | 'would-deploy';

export interface LastGood extends DeployedSummary {
  readonly digest: string;
  readonly origin: string;
  readonly subject: string;
  readonly dnsNames: readonly string[];
  readonly deployedAt: string;
  readonly targets: readonly string[];
  /** targetConfigDigest of the targets' configuration at deployment (absent in older records). */
  readonly targetConfig?: string | undefined;
}

/** Material a cycle fetched and did not deploy (refused by policy, failed reload or verification). */
export interface RefusedMaterial {
  readonly fingerprint: string;
  readonly version?: string | undefined;
  readonly notAfter?: string | undefined;
  readonly origin?: string | undefined;
}

export interface LastResult {
  readonly result: CycleOutcome;
  readonly at: string;
  /** With result "failed": what was fetched and not deployed (`lastGood` is what is still served). */
  readonly refused?: RefusedMaterial | undefined;
  readonly error?: { readonly code: string; readonly message: string } | undefined;
  readonly findings?: readonly Finding[] | undefined;
  /** Consecutive failures, for backoff. */
  readonly failures: number;
}

export interface CertState {
  readonly name: string;
  readonly lastGood?: LastGood | undefined;
  readonly lastResult?: LastResult | undefined;
  /**
   * Set just before the first target is changed and cleared when the cycle records its result.
   * Found set, it means a run died mid-deployment (SIGKILL, power loss): what the targets hold
   * is unknown, so the next cycle deploys again rather than trusting `lastGood`.
   */
  readonly pending?: { readonly fingerprint: string; readonly digest: string; readonly at: string } | undefined;
  /**
   * The remote endpoints (AWS hosts, FIPS or not) called by the last cycle that called any, and
   * when. A cycle that calls none (an issuer not due) leaves it as it was.
   */
  readonly endpoints?: { readonly at: string; readonly used: readonly EndpointUse[] } | undefined;
}

export class StateStore {
  readonly dir: string;
  /**
   * Records as written or read last, as compact JSON (null: no file), when this store is the
   * only writer: the runtime of a daemon or a rotation holds the state-dir lock, so after the
   * first cycle it reads each record from memory instead of from disk (a thousand files opened,
   * read and closed made a quarter of an unchanged cycle). Text rather than objects: a caller
   * gets its own copy, and a record costs its JSON's length.
   */
  readonly #remembered: Map<string, string | null> | undefined;

  constructor(stateDir: string, options: { remember?: boolean } = {}) {
    this.dir = join(stateDir, 'certs');
    this.#remembered = options.remember ? new Map() : undefined;
  }

  async get(name: string): Promise<CertState> {
    const known = this.#remembered?.get(name);
    if (known !== undefined) return known === null ? { name } : (JSON.parse(known) as CertState);
    try {
      const text = await readFile(join(this.dir, `${name}.json`), 'utf8');
      const state = JSON.parse(text) as CertState;
      this.#remembered?.set(name, JSON.stringify(state));
      return state;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.#remembered?.set(name, null);
        return { name };
      }
      throw err;
    }
  }

  async put(state: CertState): Promise<void> {
    // Forgotten first: a write that fails part-way leaves the file to be read again.
    this.#remembered?.delete(state.name);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(join(this.dir, `${state.name}.json`), `${JSON.stringify(state, null, 2)}\n`, 0o600);
    this.#remembered?.set(state.name, JSON.stringify(state));
  }

  async all(): Promise<CertState[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: CertState[] = [];
    for (const n of names.filter((f) => f.endsWith('.json')).sort()) out.push(await this.get(n.slice(0, -5)));
    return out;
  }
}
