import { BackupPolicy } from './backuppolicy';
import type { CrdResource } from './common';
import { ContainerPathMount } from './containerpathmount';
import { Install } from './install';
import { Network } from './network';
import { VirtualMachine } from './virtualmachine';
import { Volume } from './volume';

/** The provider's resources by type token. */
export const RESOURCES: Map<string, CrdResource> = new Map(
  [new VirtualMachine(), new Network(), new Volume(), new ContainerPathMount(), new BackupPolicy()].map((r) => [r.token, r] as [string, CrdResource]),
);

/**
 * What the gRPC server calls on a resource. The CRD-backed resources share
 * CrdResource; Install (no CRD of its own) implements the same calls.
 */
export type ProviderResource = Pick<
  CrdResource,
  'token' | 'defaultTimeoutMs' | 'check' | 'diff' | 'previewId' | 'previewResult' | 'previewUpdate' | 'create' | 'result' | 'read' | 'update' | 'delete'
>;

/** Resources without a CRD of their own, by type token (schema.json spells their properties out explicitly). */
const install: ProviderResource = new Install();
export const PROVIDER_ONLY_RESOURCES: Map<string, ProviderResource> = new Map([[install.token, install]]);

/** The type token in a URN (`urn:pulumi:stack::project::[parent$]type::name`), or the argument if it is a token. */
function typeOf(urnOrType: string): string {
  const parts = urnOrType.split('::');
  return parts.length >= 4 ? parts[parts.length - 2].split('$').pop()! : urnOrType;
}

/** Any resource the provider serves, by URN or token: what the gRPC server dispatches on. */
export function providerResourceFor(urnOrType: string): ProviderResource {
  const type = typeOf(urnOrType);
  const r = RESOURCES.get(type) ?? PROVIDER_ONLY_RESOURCES.get(type);
  if (!r) throw new Error(`unknown resource type ${type}`);
  return r;
}

/** A CRD-backed resource by URN or token. */
export function resourceFor(urnOrType: string): CrdResource {
  const type = typeOf(urnOrType);
  const r = RESOURCES.get(type);
  if (!r) throw new Error(`unknown resource type ${type}`);
  return r;
}
