/**
 * Node modules a browser worker never uses (sockets, listeners, processes, DNS): importing them is
 * harmless, calling them says where the call came from.
 */
const no = (what: string) => () => {
  throw new Error(`${what} is not available in a browser worker`);
};

export class Socket {
  constructor() {
    no('net.Socket')();
  }
}
export class Server {}
export const connect = no('net.connect');
export const createConnection = no('net.createConnection');
export const createServer = no('createServer');
export const createSocket = no('dgram.createSocket');
export const lookup = no('dns.lookup');
export const spawn = no('child_process.spawn');
export const execFileSync = no('child_process.execFileSync');
export const spawnSync = no('child_process.spawnSync');
export class Worker {
  constructor() {
    no('worker_threads.Worker')();
  }
}
export const isMainThread = true;
export const parentPort = null;
export const workerData = null;

export default { Socket, Server, connect, createConnection, createServer, createSocket, lookup, spawn, execFileSync, spawnSync, Worker };
