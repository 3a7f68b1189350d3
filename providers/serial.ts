/** Runs async sections one at a time: targets of several certificates sharing one file or directory. */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn);
    this.#tail = next.catch(() => undefined);
    return next;
  }
}
