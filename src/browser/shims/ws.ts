/**
 * The `ws` package in a browser worker: its client API (events, send with a callback, pause and
 * resume) over the browser's own WebSocket, so that the transport's WebSocket link runs unchanged.
 * A paused socket keeps its messages in order until resumed; a send's callback waits while more
 * than BUFFERED bytes are queued, as Node's write callback waits for the kernel.
 */
import { Buffer } from 'buffer';
import { EventEmitter } from 'events';

const BUFFERED = 4 << 20;

export class WebSocket extends EventEmitter {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  binaryType = 'nodebuffer';
  private readonly socket: globalThis.WebSocket;
  private paused = false;
  private held: Buffer[] = [];

  constructor(url: string, _options?: unknown) {
    super();
    this.socket = new globalThis.WebSocket(url);
    this.socket.binaryType = 'arraybuffer';
    this.socket.onopen = () => this.emit('open');
    this.socket.onmessage = (event: MessageEvent) => {
      const data = Buffer.from(event.data as ArrayBuffer);
      if (this.paused) this.held.push(data);
      else this.emit('message', data, true);
    };
    this.socket.onerror = () => this.emit('error', new Error(`WebSocket to ${url} failed`));
    this.socket.onclose = (event: CloseEvent) => this.emit('close', event.code, Buffer.from(event.reason));
  }

  get readyState(): number {
    return this.socket.readyState;
  }

  get bufferedAmount(): number {
    return this.socket.bufferedAmount;
  }

  send(data: Uint8Array, _options?: unknown, callback?: (error?: Error) => void): void {
    try {
      this.socket.send(data);
    } catch (error) {
      queueMicrotask(() => callback?.(error as Error));
      return;
    }
    if (!callback) return;
    const drained = () => {
      if (this.socket.readyState !== WebSocket.OPEN) callback(new Error('the WebSocket closed'));
      else if (this.socket.bufferedAmount <= BUFFERED) callback();
      else setTimeout(drained, 1);
    };
    queueMicrotask(drained);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    while (!this.paused && this.held.length > 0) this.emit('message', this.held.shift()!, true);
  }

  close(): void {
    this.socket.close();
  }

  terminate(): void {
    this.socket.close();
  }
}

export class WebSocketServer {
  constructor() {
    throw new Error('a browser worker cannot listen: its launcher relays connections to it');
  }
}

export default WebSocket;
