import { ResourceType } from './registry';

/**
 * Version conversion between what is stored and what a request speaks.
 * Custom resources (conversion strategy None) only change apiVersion.
 * events.k8s.io/v1 Events share storage with core v1 Events and rename fields.
 */
const EVENT_FIELDS: [core: string, events: string][] = [
  ['involvedObject', 'regarding'],
  ['message', 'note'],
  ['reportingComponent', 'reportingController'],
  ['source', 'deprecatedSource'],
  ['firstTimestamp', 'deprecatedFirstTimestamp'],
  ['lastTimestamp', 'deprecatedLastTimestamp'],
  ['count', 'deprecatedCount'],
];

export function apiVersionOf(t: ResourceType): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

/** Stored form → the form of type t. Returns the same object when nothing changes. */
export function toExternal(t: ResourceType, obj: any): any {
  if (t.group === 'events.k8s.io') return renameFields(obj, 0, 1, apiVersionOf(t));
  const av = apiVersionOf(t);
  if (obj.apiVersion === av && obj.kind === t.kind) return obj;
  return { ...obj, apiVersion: av, kind: t.kind };
}

/** The form of type t → stored form (storage version for custom resources). */
export function toStorage(t: ResourceType, obj: any): any {
  if (t.group === 'events.k8s.io') return renameFields(obj, 1, 0, 'v1');
  if (t.crd) {
    const storage = (t.crd.spec.versions ?? []).find((v: any) => v.storage)?.name ?? t.version;
    return { ...obj, apiVersion: `${t.group}/${storage}`, kind: t.kind };
  }
  return { ...obj, apiVersion: apiVersionOf(t), kind: t.kind };
}

function renameFields(obj: any, from: 0 | 1, to: 0 | 1, apiVersion: string): any {
  const out: any = { ...obj, apiVersion, kind: 'Event' };
  for (const pair of EVENT_FIELDS) {
    if (pair[from] in out) {
      out[pair[to]] = out[pair[from]];
      delete out[pair[from]];
    }
  }
  return out;
}
