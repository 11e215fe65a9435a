import * as fs from 'node:fs';
import * as path from 'node:path';
import type { VmSpec } from '../types';

/**
 * The NoCloud seed: a directory QEMU presents to the guest as a read-only FAT
 * disk labelled `cidata` (the label cloud-init looks for). Files:
 *   meta-data       instance-id (the VMI uid) and local-hostname
 *   user-data       as given, or an empty #cloud-config
 *   network-config  only when given
 *   kubevm-mounts   one line per share: "<tag> <virtiofs|9p> <ro|rw>". The test
 *                   guest mounts these under /mnt/<tag>; cloud-init ignores the file.
 */
export function needsSeed(spec: VmSpec): boolean {
  return spec.cloudInit !== undefined || spec.filesystems.length > 0;
}

export function seedFiles(spec: VmSpec, fsDriver: 'virtiofs' | '9p'): Record<string, string> {
  const hostname = spec.cloudInit?.hostname ?? spec.name;
  const files: Record<string, string> = {
    // JSON strings are valid YAML scalars: no quoting surprises from names.
    'meta-data': `instance-id: ${JSON.stringify(spec.uid)}\nlocal-hostname: ${hostname}\n`,
    'user-data': spec.cloudInit?.userData ?? '#cloud-config\n{}\n',
  };
  if (spec.cloudInit?.networkData) files['network-config'] = spec.cloudInit.networkData;
  if (spec.filesystems.length)
    files['kubevm-mounts'] = spec.filesystems.map((f) => `${f.tag} ${fsDriver} ${f.readOnly ? 'ro' : 'rw'}\n`).join('');
  return files;
}

export function writeSeed(dir: string, files: Record<string, string>): void {
  // user-data may carry secrets: only root (QEMU) reads it.
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content, { mode: 0o600 });
}
