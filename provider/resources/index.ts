import type { CrdResource } from './common';
import { Network } from './network';
import { VirtualMachine } from './virtualmachine';
import { Volume } from './volume';

/** The provider's resources by type token. */
export const RESOURCES: Map<string, CrdResource> = new Map(
  [new VirtualMachine(), new Network(), new Volume()].map((r) => [r.token, r] as [string, CrdResource]),
);

export function resourceFor(urnOrType: string): CrdResource {
  // URN: urn:pulumi:stack::project::[parent$]type::name
  const parts = urnOrType.split('::');
  const type = parts.length >= 4 ? parts[parts.length - 2].split('$').pop()! : urnOrType;
  const r = RESOURCES.get(type);
  if (!r) throw new Error(`unknown resource type ${type}`);
  return r;
}
