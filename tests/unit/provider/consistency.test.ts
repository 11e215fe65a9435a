import * as fs from 'node:fs';
import * as path from 'node:path';
import { RESOURCES } from '../../../provider/resources';
import { META_KEYS } from '../../../provider/resources/common';
import { KINDS } from '../../../controller/api/schema';

/**
 * schema.json (what the SDK lets users write and read) and the provider (what it
 * accepts and returns) must describe the same properties.
 */
const schema = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'schema.json'), 'utf8'));

test.each([...RESOURCES.values()].map((r) => [r.token, r] as const))('%s: inputs and outputs agree with schema.json', (token, r) => {
  const res = schema.resources[token];
  expect(res).toBeDefined();
  const kind = KINDS.find((k) => k.kind === r.kind)!;
  const providerInputs = [...META_KEYS, ...Object.keys(kind.spec.properties)].sort();
  expect(Object.keys(res.inputProperties).sort()).toEqual(providerInputs);
  const providerOutputs = [...new Set([...providerInputs, ...r.outputKeys])].sort();
  expect(Object.keys(res.properties).sort()).toEqual(providerOutputs);
});
