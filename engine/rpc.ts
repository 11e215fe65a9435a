import * as path from 'node:path';

/**
 * The ResourceMonitor and Engine stubs inside @pulumi/pulumi, next to the provider
 * stubs of provider/proto.ts (whose Struct comes from the same google-protobuf copy
 * the stubs were generated against; messages of two copies must not be mixed).
 */
export { grpc, providerRpc, providerPb, engineRpc, enginePb, emptyPb, structPb, fromStruct, toStruct } from '../provider/proto';

export const resourceRpc: any = require('@pulumi/pulumi/proto/resource_grpc_pb');
export const resourcePb: any = require('@pulumi/pulumi/proto/resource_pb');

/** The directory of `@pulumi/pulumi/cmd/run`, the language-host-free program runner. */
export const pulumiRunDir = path.dirname(require.resolve('@pulumi/pulumi/cmd/run'));
