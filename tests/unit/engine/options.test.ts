import { otherPackageMessage, packageOf, parseDuration, providerRefUrn, readTimeouts } from '../../../engine/options';

test('custom timeouts are Go durations, in seconds', () => {
  expect(parseDuration('90s', 'x')).toBe(90);
  expect(parseDuration('5m', 'x')).toBe(300);
  expect(parseDuration('1h30m', 'x')).toBe(5400);
  expect(parseDuration('1.5h', 'x')).toBe(5400);
  expect(parseDuration('300ms', 'x')).toBeCloseTo(0.3);
  expect(parseDuration('', 'x')).toBeUndefined();
  for (const bad of ['5', 'soon', '5 m', '-5s', '0s', '5mm', 's']) {
    expect(() => parseDuration(bad, 'customTimeouts.create')).toThrow(
      `customTimeouts.create: ${JSON.stringify(bad)} is not a positive duration`,
    );
  }
});

test('readTimeouts keeps the members that are set', () => {
  const ct = (create: string, update: string, del: string) => ({
    getCreate: () => create,
    getUpdate: () => update,
    getDelete: () => del,
  });
  expect(readTimeouts(ct('2s', '', '1m'))).toEqual({ create: 2, delete: 60 });
  expect(readTimeouts(ct('', '', ''))).toBeUndefined();
  expect(readTimeouts(undefined)).toBeUndefined();
  expect(() => readTimeouts(ct('', 'later', ''))).toThrow(/^customTimeouts\.update: "later"/);
});

test('a provider reference is `<urn>::<id>`; the URN itself contains `::`', () => {
  expect(providerRefUrn('urn:pulumi:dev::proj::pulumi:providers:kubevm::team::0b7e4bd2-1f6c-4bd4-a5a3-0a4f3b1b1c2d')).toBe(
    'urn:pulumi:dev::proj::pulumi:providers:kubevm::team',
  );
  expect(providerRefUrn('')).toBe('');
  expect(() => providerRefUrn('team')).toThrow(/is not of the form <urn>::<id>/);
});

test('resources of other packages are named by type and package', () => {
  expect(packageOf('kubernetes:core/v1:Namespace')).toBe('kubernetes');
  expect(packageOf('pulumi:providers:kubernetes')).toBe('kubernetes');
  expect(otherPackageMessage('random:index:RandomPet')).toBe(
    'random:index:RandomPet belongs to the "random" package: only kubevm resources run in the local engine; run this program with the Pulumi CLI (`pulumi up`) instead',
  );
});
