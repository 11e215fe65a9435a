/** Jest: ts-jest in transpile-only mode (tsc type-checks separately in `npm test`).
 * @kubernetes/client-node 2.x and a few of its dependencies are ESM-only, so
 * node_modules go through the transform too (cached after the first run). */
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/tests/**/*.test.ts'],
  transform: {
    '^.+\\.[tj]sx?$': ['ts-jest', { tsconfig: { allowJs: true, module: 'commonjs', esModuleInterop: true, isolatedModules: true, target: 'ES2022' }, diagnostics: false }],
  },
  // Several ESM-only packages sit under client-node (socks-proxy-agent, openid-client, …): transform them all.
  transformIgnorePatterns: ['/node_modules/(typescript|@babel|jest-[a-z-]+|better-sqlite3)/'],
  testTimeout: 60000,
  maxWorkers: 2,
};
