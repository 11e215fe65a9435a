import { settingsFor, validateFleet, type Fleet } from '../../examples/fleet/fleet';

/** examples/fleet's merge rules: defaults ← role ← VM; labels merge; bad lists are refused by name. */
jest.mock('@kubevm/pulumi', () => ({}), { virtual: true });

const fleet: Fleet<'web' | 'db'> = {
  name: 'f',
  defaults: {
    memory: '128Mi',
    cores: 1,
    runStrategy: 'Always',
    backend: 'sim',
    labels: { app: 'a', tier: 'none' },
    dataDiskSize: '16Mi',
  },
  roles: { web: {}, db: { memory: '256Mi', cores: 2, labels: { tier: 'data' } } },
  vms: [
    { name: 'w', role: 'web' },
    { name: 'd', role: 'db', memory: '512Mi', runStrategy: 'Halted', labels: { backup: 'daily' } },
  ],
};

test('a VM takes the defaults, then its role, then its own settings; labels merge', () => {
  expect(settingsFor(fleet, fleet.vms[0])).toEqual({
    ...fleet.defaults,
    labels: { app: 'a', tier: 'none', fleet: 'f', role: 'web' },
  });
  expect(settingsFor(fleet, fleet.vms[1])).toEqual({
    memory: '512Mi',
    cores: 2,
    runStrategy: 'Halted',
    backend: 'sim',
    dataDiskSize: '16Mi',
    labels: { app: 'a', tier: 'data', backup: 'daily', fleet: 'f', role: 'db' },
  });
});

test('a role that is not declared and a name listed twice are refused, naming them', () => {
  expect(() => settingsFor(fleet, { name: 'x', role: 'cache' as 'web' })).toThrow(
    'fleet f: VM x has role "cache", which is not in roles (web, db)',
  );
  expect(() => validateFleet({ ...fleet, vms: [...fleet.vms, { name: 'w', role: 'db' }] })).toThrow(
    'fleet f: VM name "w" is listed twice',
  );
});
