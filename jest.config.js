/** Jest: ts-jest in transpile-only mode (tsc type-checks separately in `npm test`).
 * @kubernetes/client-node 2.x and a few of its dependencies are ESM-only, so
 * node_modules go through the transform too (cached after the first run). */
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/tests/**/*.test.ts'],
  transform: {
    '^.+\\.[tj]sx?$': ['ts-jest', { tsconfig: { allowJs: true, module: 'commonjs', esModuleInterop: true, isolatedModules: true, target: 'ES2022' }, diagnostics: false }],
  },
  transformIgnorePatterns: ['/node_modules/(?!(@kubernetes|openid-client|oauth4webapi|jose|undici|jsonpath-plus|@jsep-plugin|jsep|hpagent|isomorphic-ws|stream-buffers|tar-fs|yaml)/)'],
  testTimeout: 60000,
  maxWorkers: 2,
};
