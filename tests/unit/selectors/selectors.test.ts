import {
  SelectorError,
  compileFieldSelector,
  fieldGetter,
  labelSelectorFromObject,
  labelSelectorToString,
  parseFieldSelector,
  parseLabelSelector,
} from '../../../cluster/apiserver/selectors';

/** Runs fn and returns the SelectorError message it throws (fails if it does not throw one). */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SelectorError);
    return (e as Error).message;
  }
  throw new Error('expected a SelectorError');
}

const NAME_PART_ERR =
  "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_ERR =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

describe('parseLabelSelector: matching', () => {
  const web = { app: 'web', tier: 'frontend', env: '' };

  it.each([
    ['', true],
    ['app=web', true],
    ['app==web', true],
    ['app=db', false],
    ['app!=db', true],
    ['app!=web', false],
    ['app in (db,web)', true],
    ['app in (db)', false],
    ['app notin (db,cache)', true],
    ['app notin (web)', false],
    ['app', true],
    ['missing', false],
    ['!missing', true],
    ['!app', false],
    ['app=web,tier=frontend', true],
    ['app=web,tier=backend', false],
    ['  app = web ,  tier in ( frontend , x )  ', true],
    ['env=', true], // "key=" selects the empty value
    ['env in (foo,,bar)', true], // an empty entry in a set is the empty value
    ['env notin ()', false], // "()" is the set holding only ""
  ])('%j on %j -> %s', (sel, expected) => {
    expect(parseLabelSelector(sel)(web)).toBe(expected);
  });

  it('treats undefined selector and undefined labels sensibly', () => {
    expect(parseLabelSelector(undefined)(undefined)).toBe(true);
    expect(parseLabelSelector('a')(undefined)).toBe(false);
    expect(parseLabelSelector('!a')(undefined)).toBe(true);
  });

  it('lets notin and != match objects without the label (upstream semantics)', () => {
    expect(parseLabelSelector('env notin (prod)')({ app: 'x' })).toBe(true);
    expect(parseLabelSelector('env!=prod')({})).toBe(true);
    expect(parseLabelSelector('env in (prod)')({})).toBe(false);
    expect(parseLabelSelector('env=prod')({})).toBe(false);
    // ...but "in" with the empty value still needs the key to exist.
    expect(parseLabelSelector('env in (,prod)')({})).toBe(false);
  });

  it('reads keywords as values and keys in value position', () => {
    expect(parseLabelSelector('a in (in,notin)')({ a: 'notin' })).toBe(true);
    expect(parseLabelSelector('a=in')({ a: 'in' })).toBe(true);
  });

  it('accepts prefixed keys', () => {
    expect(parseLabelSelector('app.kubernetes.io/name=web')({ 'app.kubernetes.io/name': 'web' })).toBe(true);
    expect(parseLabelSelector('!node-role.kubernetes.io/control-plane')({})).toBe(true);
  });

  it('supports the numeric > and < operators', () => {
    expect(parseLabelSelector('gen>5')({ gen: '6' })).toBe(true);
    expect(parseLabelSelector('gen>5')({ gen: '5' })).toBe(false);
    expect(parseLabelSelector('gen<5')({ gen: '-1' })).toBe(true);
    expect(parseLabelSelector('gen>5')({ gen: 'x' })).toBe(false);
    expect(parseLabelSelector('gen>5')({})).toBe(false);
  });

  it('does not confuse Object.prototype names with tokens, labels or fields', () => {
    expect(parseLabelSelector('constructor')({})).toBe(false);
    expect(parseLabelSelector('toString in (x)')({ toString: 'x' })).toBe(true);
    expect(errorOf(() => labelSelectorFromObject({ matchExpressions: [{ key: 'a', operator: 'constructor' as any }] }))).toBe(
      '"constructor" is not a valid label selector operator',
    );
    expect(errorOf(() => compileFieldSelector(parseFieldSelector('constructor=x'), '', 'pods'))).toBe(
      'field label not supported: constructor',
    );
  });
});

describe('parseLabelSelector: errors (upstream text)', () => {
  it.each([
    ['a b', "unable to parse requirement: found 'b', expected: '=', '!=', '==', 'in', notin'"],
    ['a=b,', "found '', expected: identifier after ','"],
    ['a=b c', "found 'c', expected: ',' or 'end of string'"],
    [',', "found ',', expected: !, identifier, or 'end of string'"],
    ['=b', "found '=', expected: !, identifier, or 'end of string'"],
    ['!a=b', "found '=', expected: ',' or 'end of string'"],
    ['a in x', "unable to parse requirement: found 'x' expected: '('"],
    ['a in (b', "unable to parse requirement: found '', expected: ',' or ')'"],
    ['a in (b c)', "unable to parse requirement: found 'c', expected: ',' or ')'"],
    ['a in (=)', "unable to parse requirement: found '=', expected: ',', ')' or identifier"],
    ['a==(', "unable to parse requirement: found '(', expected: identifier"],
    ['!!a', "unable to parse requirement: found '!', expected: identifier"],
  ])('%j', (sel, msg) => {
    expect(errorOf(() => parseLabelSelector(sel))).toBe(msg);
  });

  it('reports invalid keys against a <nil> field path', () => {
    expect(errorOf(() => parseLabelSelector('-a=b'))).toBe(
      `unable to parse requirement: <nil>: Invalid value: "-a": ${NAME_PART_ERR}`,
    );
    expect(errorOf(() => parseLabelSelector('/a'))).toBe(
      'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty',
    );
    expect(errorOf(() => parseLabelSelector('Example.com/a'))).toMatch(
      /^unable to parse requirement: <nil>: Invalid value: "Example.com\/a": prefix part a lowercase RFC 1123 subdomain must consist of/,
    );
    expect(errorOf(() => parseLabelSelector('a/b/c'))).toMatch(
      /: a qualified name must consist of .* with an optional DNS subdomain prefix and '\/' \(e\.g\. 'example\.com\/MyName'\)$/,
    );
    expect(errorOf(() => parseLabelSelector('k'.repeat(64)))).toContain('name part must be no more than 63 characters');
  });

  it('reports invalid values with the values[i][key] path', () => {
    expect(errorOf(() => parseLabelSelector('app=we b'))).toBe("found 'b', expected: ',' or 'end of string'");
    expect(errorOf(() => parseLabelSelector('app=b@'))).toBe(
      `unable to parse requirement: values[0][app]: Invalid value: "b@": ${VALUE_ERR}`,
    );
    const long = 'v'.repeat(64);
    expect(errorOf(() => parseLabelSelector(`app=${long}`))).toBe(
      `unable to parse requirement: values[0][app]: Invalid value: "${long}": must be no more than 63 characters`,
    );
    // Both problems at once are joined with "; ".
    expect(errorOf(() => parseLabelSelector(`app=-${long}`))).toBe(
      `unable to parse requirement: values[0][app]: Invalid value: "-${long}": must be no more than 63 characters; ${VALUE_ERR}`,
    );
  });

  it('aggregates several invalid values in sorted order, in brackets', () => {
    expect(errorOf(() => parseLabelSelector('app in (z@,a@)'))).toBe(
      `unable to parse requirement: [values[0][app]: Invalid value: "a@": ${VALUE_ERR}, values[1][app]: Invalid value: "z@": ${VALUE_ERR}]`,
    );
  });

  it('requires integers for > and <', () => {
    expect(errorOf(() => parseLabelSelector('a>x'))).toBe(
      `unable to parse requirement: values[0]: Invalid value: "x": for 'Gt', 'Lt' operators, the value must be an integer`,
    );
  });
});

describe('labelSelectorFromObject', () => {
  it('ANDs matchLabels and matchExpressions', () => {
    const sel = labelSelectorFromObject({
      matchLabels: { app: 'web' },
      matchExpressions: [
        { key: 'tier', operator: 'In', values: ['a', 'b'] },
        { key: 'env', operator: 'NotIn', values: ['prod'] },
        { key: 'team', operator: 'Exists' },
        { key: 'legacy', operator: 'DoesNotExist' },
      ],
    });
    expect(sel({ app: 'web', tier: 'a', team: 'x' })).toBe(true);
    expect(sel({ app: 'web', tier: 'a', team: 'x', env: 'prod' })).toBe(false);
    expect(sel({ app: 'web', tier: 'c', team: 'x' })).toBe(false);
    expect(sel({ app: 'web', tier: 'a' })).toBe(false);
    expect(sel({ app: 'web', tier: 'a', team: 'x', legacy: '' })).toBe(false);
    expect(sel({ tier: 'a', team: 'x' })).toBe(false);
  });

  it('matches nothing for a missing selector and everything for an empty one', () => {
    expect(labelSelectorFromObject(undefined)({ a: 'b' })).toBe(false);
    expect(labelSelectorFromObject(null)({})).toBe(false);
    expect(labelSelectorFromObject({})({ a: 'b' })).toBe(true);
    expect(labelSelectorFromObject({ matchLabels: {}, matchExpressions: [] })(undefined)).toBe(true);
  });

  it('rejects bad operators and value sets like upstream', () => {
    expect(errorOf(() => labelSelectorFromObject({ matchExpressions: [{ key: 'a', operator: 'Gt' as any }] }))).toBe(
      '"Gt" is not a valid label selector operator',
    );
    expect(errorOf(() => labelSelectorFromObject({ matchExpressions: [{ key: 'a', operator: 'In', values: [] }] }))).toBe(
      "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
    );
    expect(errorOf(() => labelSelectorFromObject({ matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] }))).toBe(
      'values: Invalid value: ["x"]: values set must be empty for exists and does not exist',
    );
    expect(errorOf(() => labelSelectorFromObject({ matchLabels: { 'bad key': 'v' } }))).toBe(
      `key: Invalid value: "bad key": ${NAME_PART_ERR}`,
    );
  });

  it('prints the selector like upstream Selector.String()', () => {
    expect(
      labelSelectorToString({
        matchLabels: { tier: 'web', app: 'shop' },
        matchExpressions: [
          { key: 'env', operator: 'NotIn', values: ['prod', 'dev'] },
          { key: 'zone', operator: 'In', values: ['b'] },
          { key: 'canary', operator: 'DoesNotExist' },
          { key: 'owner', operator: 'Exists' },
        ],
      }),
    ).toBe('app=shop,!canary,env notin (dev,prod),owner,tier=web,zone in (b)');
    expect(labelSelectorToString({})).toBe('');
    expect(labelSelectorToString(undefined)).toBe('');
  });
});

describe('parseFieldSelector', () => {
  it('parses =, == and != with comma as AND', () => {
    expect(parseFieldSelector('metadata.name=a,status.phase==Running,spec.nodeName!=n1')).toEqual([
      { field: 'metadata.name', op: '=', value: 'a' },
      { field: 'spec.nodeName', op: '!=', value: 'n1' },
      { field: 'status.phase', op: '=', value: 'Running' },
    ]);
    expect(parseFieldSelector(undefined)).toEqual([]);
    expect(parseFieldSelector('')).toEqual([]);
    expect(parseFieldSelector('a=,')).toEqual([{ field: 'a', op: '=', value: '' }]);
  });

  it('unescapes \\, \\= and \\\\ in values', () => {
    expect(parseFieldSelector('a=x\\,y\\=z\\\\')).toEqual([{ field: 'a', op: '=', value: 'x,y=z\\' }]);
  });

  it('does not trim spaces (upstream neither)', () => {
    expect(parseFieldSelector('a = b')).toEqual([{ field: 'a ', op: '=', value: ' b' }]);
  });

  it.each([
    ['a', "invalid selector: 'a'; can't understand 'a'"],
    ['a=b,c', "invalid selector: 'a=b,c'; can't understand 'c'"],
    ['a=b=c', 'invalid field selector: unescaped character in value: 61'],
    ['a=\\q', 'invalid field selector: invalid escape sequence: \\q'],
    ['a=b\\', 'invalid field selector: invalid escape sequence: \\'],
  ])('rejects %j', (s, msg) => {
    expect(errorOf(() => parseFieldSelector(s))).toBe(msg);
  });
});

describe('compileFieldSelector and fieldGetter', () => {
  const compile = (s: string, group: string, resource: string, extra?: string[]) =>
    compileFieldSelector(parseFieldSelector(s), group, resource, extra);

  it('supports metadata.name / metadata.namespace everywhere by default', () => {
    const m = compile('metadata.name=a,metadata.namespace!=kube-system', '', 'configmaps');
    expect(m({ metadata: { name: 'a', namespace: 'default' } })).toBe(true);
    expect(m({ metadata: { name: 'a', namespace: 'kube-system' } })).toBe(false);
    expect(m({ metadata: { name: 'b', namespace: 'default' } })).toBe(false);
  });

  it('uses the default conversion message for kinds without their own field labels', () => {
    for (const [g, r] of [
      ['', 'configmaps'],
      ['apps', 'deployments'],
      ['coordination.k8s.io', 'leases'],
      ['rbac.authorization.k8s.io', 'clusterroles'],
    ]) {
      expect(errorOf(() => compile('foo.bar=x', g, r))).toBe(
        '"foo.bar" is not a known field selector: only "metadata.name", "metadata.namespace"',
      );
    }
  });

  it('uses "field label not supported" for kinds with conversion functions and for CRs', () => {
    expect(errorOf(() => compile('status.hostIP=1.2.3.4', '', 'pods'))).toBe('field label not supported: status.hostIP');
    expect(errorOf(() => compile('metadata.namespace=x', '', 'nodes'))).toBe('field label not supported: metadata.namespace');
    expect(errorOf(() => compile('metadata.namespace=x', '', 'namespaces'))).toBe(
      'field label not supported: metadata.namespace',
    );
    expect(errorOf(() => compile('spec.color=red', 'example.com', 'widgets', []))).toBe('field label not supported: spec.color');
    expect(errorOf(() => compile('spec.color=red', 'example.com', 'widgets'))).toBe('field label not supported: spec.color');
  });

  it('validates even when there is nothing to match', () => {
    expect(() => compile('nope=1', '', 'secrets')).toThrow(SelectorError);
    expect(compile('', '', 'secrets')({})).toBe(true);
  });

  it('selects pods by node, phase and the spec.host alias; missing fields compare as ""', () => {
    const scheduled = {
      metadata: { name: 'p' },
      spec: { nodeName: 'n1', restartPolicy: 'Always' },
      status: { phase: 'Running', podIP: '10.0.0.5' },
    };
    const pending = { metadata: { name: 'q' }, spec: {}, status: { phase: 'Pending' } };
    expect(compile('spec.nodeName=n1', '', 'pods')(scheduled)).toBe(true);
    expect(compile('spec.host=n1', '', 'pods')(scheduled)).toBe(true);
    expect(compile('spec.nodeName=', '', 'pods')(pending)).toBe(true);
    expect(compile('spec.nodeName=', '', 'pods')(scheduled)).toBe(false);
    expect(compile('status.phase!=Running', '', 'pods')(pending)).toBe(true);
    expect(compile('status.phase=Running,spec.restartPolicy=Always', '', 'pods')(scheduled)).toBe(true);
    expect(compile('status.podIP=10.0.0.5', '', 'pods')(scheduled)).toBe(true);
    expect(compile('status.podIP=10.0.0.6', '', 'pods')({ status: { podIPs: [{ ip: '10.0.0.6' }] } })).toBe(true);
    // Booleans default to false even when absent.
    expect(compile('spec.hostNetwork=false', '', 'pods')(pending)).toBe(true);
    expect(compile('spec.hostNetwork=true', '', 'pods')({ spec: { hostNetwork: true } })).toBe(true);
  });

  it('compares node spec.unschedulable as "true"/"false"', () => {
    expect(compile('spec.unschedulable=false', '', 'nodes')({ metadata: { name: 'n' }, spec: {} })).toBe(true);
    expect(compile('spec.unschedulable=true', '', 'nodes')({ spec: { unschedulable: true } })).toBe(true);
    expect(compile('spec.unschedulable!=true', '', 'nodes')({ spec: { unschedulable: true } })).toBe(false);
  });

  it('supports the event fields kubectl describe uses', () => {
    const ev = {
      metadata: { name: 'e1', namespace: 'default' },
      involvedObject: { kind: 'Pod', name: 'web-1', namespace: 'default', uid: 'u-1' },
      reason: 'Scheduled',
      type: 'Normal',
      source: { component: 'default-scheduler' },
      reportingComponent: 'default-scheduler',
    };
    const m = compile(
      'involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.kind=Pod,involvedObject.uid=u-1',
      '',
      'events',
    );
    expect(m(ev)).toBe(true);
    expect(m({ ...ev, involvedObject: { ...ev.involvedObject, uid: 'u-2' } })).toBe(false);
    expect(compile('source=default-scheduler,type=Normal,reason=Scheduled', '', 'events')(ev)).toBe(true);
    expect(compile('involvedObject.fieldPath=', '', 'events')(ev)).toBe(true);
  });

  it('maps events.k8s.io field names onto the event', () => {
    const ev = {
      metadata: { name: 'e' },
      regarding: { kind: 'Node', name: 'n1' },
      reportingController: 'kubelet',
      type: 'Warning',
    };
    expect(compile('regarding.kind=Node,regarding.name=n1,reportingController=kubelet', 'events.k8s.io', 'events')(ev)).toBe(
      true,
    );
    expect(errorOf(() => compile('involvedObject.kind=Node', 'events.k8s.io', 'events'))).toBe(
      'field label not supported: involvedObject.kind',
    );
  });

  it('selects secrets by type and services by spec.type', () => {
    expect(compile('type=kubernetes.io/tls', '', 'secrets')({ type: 'kubernetes.io/tls' })).toBe(true);
    expect(compile('spec.type=ClusterIP', '', 'services')({ spec: { type: 'ClusterIP' } })).toBe(true);
    expect(compile('status.phase=Active', '', 'namespaces')({ status: { phase: 'Active' } })).toBe(true);
  });

  it('supports CRD selectableFields passed as extra jsonPaths', () => {
    const extra = ['.spec.color', '.spec.size', '.spec.enabled', '.status.ready'];
    const obj = { metadata: { name: 'w', namespace: 'ns' }, spec: { color: 'red', size: 3, enabled: true } };
    expect(compile('spec.color=red,spec.size=3,spec.enabled=true', 'example.com', 'widgets', extra)(obj)).toBe(true);
    expect(compile('status.ready=', 'example.com', 'widgets', extra)(obj)).toBe(true);
    expect(compile('metadata.namespace=ns', 'example.com', 'widgets', extra)(obj)).toBe(true);
    expect(compile('spec.color!=red', 'example.com', 'widgets', extra)(obj)).toBe(false);
  });

  it('fieldGetter stringifies values and throws for unknown fields', () => {
    const get = fieldGetter('', 'nodes');
    expect(get({ spec: { unschedulable: true } }, 'spec.unschedulable')).toBe('true');
    expect(get({}, 'metadata.name')).toBeUndefined();
    expect(() => get({}, 'spec.podCIDR')).toThrow('field label not supported: spec.podCIDR');
    const cr = fieldGetter('example.com', 'widgets', ['.spec.size']);
    expect(cr({ spec: { size: 7 } }, 'spec.size')).toBe('7');
    expect(cr({ spec: { size: { nested: 1 } } }, 'spec.size')).toBeUndefined();
  });
});
