/** CPU time of processes from /proc (Linux), to say what one request costs each party of a benchmark. */
import { readdirSync, readFileSync } from 'node:fs';

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** User + system CPU seconds a process has used so far (all its threads); 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS; // utime, stime
  } catch {
    return 0;
  }
}

/** Pids of the running processes whose command name (/proc/<pid>/comm) is `comm`, e.g. every PostgreSQL backend. */
export function pidsNamed(comm: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === comm) pids.push(Number(entry));
    } catch {
      // gone between the listing and the read
    }
  }
  return pids;
}

/** A party of a benchmark: a name and how to find its processes (looked up at every reading). */
export interface CpuParty {
  name: string;
  pids: () => number[];
}

/**
 * Reads the CPU seconds of each party, this process included (`load generator`). Two readings
 * around a round of load give each party's CPU for that round; processes that start or end
 * within it are counted only for the part they were seen in both readings.
 */
export function cpuReading(parties: CpuParty[]): Map<string, Map<number, number>> {
  const reading = new Map<string, Map<number, number>>();
  for (const party of parties) reading.set(party.name, new Map(party.pids().map((pid) => [pid, cpuSeconds(pid)])));
  reading.set('load generator', new Map([[process.pid, cpuSeconds(process.pid)]]));
  return reading;
}

/** CPU seconds each party used between two readings. */
export function cpuBetween(
  before: Map<string, Map<number, number>>,
  after: Map<string, Map<number, number>>,
): Map<string, number> {
  const used = new Map<string, number>();
  for (const [name, pids] of after) {
    let seconds = 0;
    for (const [pid, end] of pids) {
      const start = before.get(name)?.get(pid);
      if (start !== undefined) seconds += Math.max(0, end - start);
    }
    used.set(name, seconds);
  }
  return used;
}
