import { createServer, type AddressInfo } from 'node:net';

/**
 * A loopback port nothing listens on now, the kernel's pick. A random one can be taken, even by
 * an outgoing connection: the ephemeral range (32768-60999) overlaps any range picked by hand.
 */
export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}
