// Loaded into Pulumi programs the local engine runs (node --require), before @pulumi/pulumi/cmd/run.
//
// @pulumi/pulumi's debuggablePromise records `new Error().stack` on every output property's promise of
// every resource, and source-map-support (installed by cmd/run) maps every frame of every one of those
// stacks: about half the program's CPU in a 1,000-resource preview. Those stacks are kept for leak
// diagnostics only, so they are formatted plainly here; every other stack (user errors) still goes
// through whatever Error.prepareStackTrace is installed (source maps included).
'use strict';
let installed = Error.prepareStackTrace;
function plain(err, frames) {
  return String(err) + frames.map((f) => `\n    at ${f}`).join('');
}
function prepare(err, frames) {
  const top = frames.length ? frames[0].getFileName() || '' : '';
  if (top.endsWith('debuggable.js') || !installed) return plain(err, frames);
  return installed(err, frames);
}
Object.defineProperty(Error, 'prepareStackTrace', {
  configurable: true,
  enumerable: false,
  get() {
    return prepare;
  },
  set(fn) {
    installed = fn === prepare ? installed : fn;
  },
});
