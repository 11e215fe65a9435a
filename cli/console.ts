import * as fs from 'node:fs';
import { GVR, Kube } from '../controller/runtime/kube';

/**
 * `kubevm console VM`: prints the serial console log of the VM's running
 * instance and follows it, like `tail -f`, until interrupted or the instance
 * goes away. Works where the console log is readable (the embedded cluster,
 * or on the node itself).
 */
export async function consoleCommand(
  kube: Kube,
  namespace: string,
  vm: string,
  follow: boolean,
  out: NodeJS.WritableStream = process.stdout,
  signal?: AbortSignal,
): Promise<number> {
  const vmi = await kube.tryGet(GVR.vmi, namespace, vm);
  if (!vmi) {
    process.stderr.write(`kubevm: VirtualMachine ${namespace}/${vm} has no running instance\n`);
    return 1;
  }
  let file: string = vmi.status?.consoleLog;
  if (!file || !fs.existsSync(file)) {
    process.stderr.write(`kubevm: the instance of ${namespace}/${vm} has no console log on this machine yet${file ? ` (${file})` : ''}\n`);
    return 1;
  }
  let pos = 0;
  const pump = () => {
    const size = fs.statSync(file).size;
    if (size < pos) pos = 0; // truncated: start over
    if (size === pos) return;
    const fd = fs.openSync(file, 'r');
    const buf = Buffer.alloc(size - pos);
    fs.readSync(fd, buf, 0, buf.length, pos);
    fs.closeSync(fd);
    pos = size;
    out.write(buf);
  };
  pump();
  if (!follow) return 0;
  const uid = vmi.metadata.uid;
  return new Promise<number>((resolve) => {
    const tick = setInterval(() => {
      try {
        pump();
      } catch {
        /* rotated away between stat and read */
      }
    }, 200);
    const check = setInterval(async () => {
      const now = await kube.tryGet(GVR.vmi, namespace, vm).catch(() => undefined);
      // After a live migration the instance's console is the target node's log: follow it from its start.
      const moved = now?.metadata.uid === uid && now.status?.consoleLog && now.status.consoleLog !== file;
      if (moved && fs.existsSync(now.status.consoleLog)) {
        try {
          pump();
        } catch {
          /* the source's log is gone already */
        }
        file = now.status.consoleLog;
        pos = 0;
        process.stderr.write(`\nkubevm: ${namespace}/${vm} migrated to ${now.status.nodeName}; following its console there\n`);
        return;
      }
      if (!now || now.metadata.uid !== uid) {
        clearInterval(tick);
        clearInterval(check);
        pump();
        process.stderr.write(`\nkubevm: the instance of ${namespace}/${vm} ended\n`);
        resolve(0);
      }
    }, 1000);
    const stop = () => {
      clearInterval(tick);
      clearInterval(check);
      resolve(0);
    };
    process.once('SIGINT', stop);
    signal?.addEventListener('abort', stop, { once: true });
  });
}
