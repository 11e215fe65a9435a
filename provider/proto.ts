import * as path from 'node:path';

/**
 * The gRPC stubs that ship inside @pulumi/pulumi, and the google-protobuf
 * well-known types *from the same copy of google-protobuf they were generated
 * against*: @pulumi/pulumi pins google-protobuf 3.x under its own node_modules
 * while the project depends on 4.x, and messages of one copy must not be nested
 * in messages of the other.
 */
export const grpc: typeof import('@grpc/grpc-js') = require('@grpc/grpc-js');
export const providerRpc: typeof import('@pulumi/pulumi/proto/provider_grpc_pb') = require('@pulumi/pulumi/proto/provider_grpc_pb');
export const providerPb: typeof import('@pulumi/pulumi/proto/provider_pb') = require('@pulumi/pulumi/proto/provider_pb');
export const pluginPb: typeof import('@pulumi/pulumi/proto/plugin_pb') = require('@pulumi/pulumi/proto/plugin_pb');
export const engineRpc: typeof import('@pulumi/pulumi/proto/engine_grpc_pb') = require('@pulumi/pulumi/proto/engine_grpc_pb');
export const enginePb: typeof import('@pulumi/pulumi/proto/engine_pb') = require('@pulumi/pulumi/proto/engine_pb');
export const statusPb: any = require('@pulumi/pulumi/proto/status_pb');

const protoDir = path.dirname(require.resolve('@pulumi/pulumi/proto/provider_pb'));
const wellKnown = (name: string): any => require(require.resolve(`google-protobuf/google/protobuf/${name}_pb`, { paths: [protoDir] }));

export const structPb: { Struct: { fromJavaScript(v: Record<string, unknown>): any } } = wellKnown('struct');
export const emptyPb: { Empty: new () => any } = wellKnown('empty');
export const anyPb: { Any: new () => any } = wellKnown('any');

/** A Struct message → plain JS (special Pulumi values stay as their wire shapes). */
export function fromStruct(s: { toJavaScript(): Record<string, unknown> } | undefined): Record<string, any> | undefined {
  return s ? (s.toJavaScript() as Record<string, any>) : undefined;
}

/** Plain JS → Struct; `undefined` members are dropped (a Struct cannot hold them). */
export function toStruct(v: Record<string, unknown>): any {
  return structPb.Struct.fromJavaScript(JSON.parse(JSON.stringify(v ?? {})));
}
