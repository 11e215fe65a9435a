/**
 * The HAL's front door: pick a backend by name. Backends live in a folder each
 * (qemu/, sim/) behind the one interface in types.ts; shared process, QMP and
 * path code is in common/.
 */
import { QemuBackend, type QemuBackendOptions } from './qemu/backend';
import { SimBackend, type SimBackendOptions } from './sim/backend';
import { HalError, type Backend, type BackendName } from './types';

export * from './types';
export * from './migration-types';
export { migratable, missingCapabilities, requiredCapabilities } from './capabilities';
export { confinePath, normalisePath, PathError } from './common/paths';
export { validateSpec } from './validate';
export { QemuBackend, SimBackend };
export type { QemuBackendOptions, SimBackendOptions };
export { SimWorld } from './sim/backend';

export const backendNames: readonly BackendName[] = ['qemu', 'sim'];

export interface BackendOptions {
  qemu?: QemuBackendOptions;
  sim?: SimBackendOptions;
}

export function createBackend(name: 'qemu', opts: QemuBackendOptions): QemuBackend;
export function createBackend(name: 'sim', opts?: SimBackendOptions): SimBackend;
export function createBackend(name: string, opts?: QemuBackendOptions | SimBackendOptions): Backend;
export function createBackend(name: string, opts?: QemuBackendOptions | SimBackendOptions): Backend {
  switch (name) {
    case 'qemu':
      if (!opts || !('runRoot' in opts)) throw new HalError('Invalid', 'backend "qemu" needs options with runRoot');
      return new QemuBackend(opts);
    case 'sim':
      return new SimBackend(opts as SimBackendOptions | undefined);
    default:
      throw new HalError('Invalid', `unknown hypervisor backend "${name}" (known: ${backendNames.join(', ')})`);
  }
}
