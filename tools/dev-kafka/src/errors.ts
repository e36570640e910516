/** Thrown for an `error ...` answer of the mock broker. */
export class DevKafkaCommandError extends Error {
  constructor(
    readonly command: string,
    readonly reason: string,
  ) {
    super(`dev-kafka: "${command}" failed: ${reason}`);
    this.name = 'DevKafkaCommandError';
  }
}
